package relay

import "sync"

// readAhead reads ahead while a client streams: go-smtp reads its
// connection 4 KiB at a time, one system call each, which on a large
// message is most of the kernel's share of receiving it. Once a read fills
// the caller's buffer, the next reads go through ahead, a pooled 64 KiB
// buffer given back when drained, for as long as each fills it. Commands,
// which never fill a read, bypass it. A read that waits on the socket may
// hold the buffer (a client that stalls just after filling a read), so at
// most maxReadAheads such reads wait at once; past that, reads go straight
// through. A session that ends before draining its buffer leaves it to the
// garbage collector, and no slot taken.
type readAhead struct {
	ahead     *[]byte
	ar, aw    int   // unread bytes of ahead are ahead[ar:aw]
	aheadErr  error // came with the bytes read ahead; given after them
	streaming bool  // the last read filled its buffer
}

// readAheadSize is the most a connection reads from its socket at once;
// maxReadAheads bounds the read-ahead buffers waiting on sockets to 8 MiB.
const (
	readAheadSize = 64 << 10
	maxReadAheads = 128
)

var (
	readAheadBufs  = sync.Pool{New: func() any { b := make([]byte, readAheadSize); return &b }}
	readAheadSlots = make(chan struct{}, maxReadAheads)
)

// fillAhead reads the socket (read) into a read-ahead buffer. It returns
// nil when maxReadAheads reads already wait, and the caller reads straight
// into its own buffer.
func fillAhead(read func([]byte) (int, error)) (*[]byte, int, error) {
	select {
	case readAheadSlots <- struct{}{}:
	default:
		return nil, 0, nil
	}
	buf := readAheadBufs.Get().(*[]byte)
	n, err := read(*buf)
	<-readAheadSlots
	return buf, n, err
}

// readThrough reads into b what was read ahead, else the socket (read):
// ahead while the client streams, straight into b otherwise. Reads are
// never concurrent.
func (a *readAhead) readThrough(b []byte, read func([]byte) (int, error)) (int, error) {
	if a.ahead != nil {
		n := copy(b, (*a.ahead)[a.ar:a.aw])
		a.ar += n
		if a.ar < a.aw {
			return n, nil
		}
		readAheadBufs.Put(a.ahead)
		a.ahead = nil
		err := a.aheadErr
		a.aheadErr = nil
		return n, err
	}
	if a.streaming && len(b) < readAheadSize {
		if buf, n, err := fillAhead(read); buf != nil {
			a.streaming = n == len(*buf)
			if n == 0 {
				readAheadBufs.Put(buf)
				return 0, err
			}
			a.ahead, a.ar, a.aw, a.aheadErr = buf, 0, n, err
			return a.readThrough(b, read)
		}
	}
	n, err := read(b)
	a.streaming = n == len(b) && n > 0
	return n, err
}
