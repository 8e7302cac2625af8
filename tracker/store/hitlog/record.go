package hitlog

import (
	"encoding/binary"
	"hash/crc32"
	"io"
	"os"
)

// A record is: payload length (uint32), CRC-32C of the rest (uint32),
// sequence (uint64), payload. Sequences only grow. Reading stops at the
// first record that does not follow the one before: a torn append, the
// zeros past the end of what was written, or older records left in a
// reused region.
const (
	// HeaderSize is the bytes of a record before its payload.
	HeaderSize = 16
	// MaxPayload is the largest payload of a record.
	MaxPayload = 64 << 10
	// GrowStep is the zero-filled step in which Grow lengthens a file.
	GrowStep = 1 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// AppendRecord appends the record of payload with sequence seq to b.
func AppendRecord(b []byte, seq uint64, payload []byte) []byte {
	b, start := BeginRecord(b, seq)
	return EndRecord(append(b, payload...), start)
}

// BeginRecord appends the header of a record with sequence seq to b and
// returns where the record starts; the caller appends the payload in
// pieces, without copying it first, then calls EndRecord.
func BeginRecord(b []byte, seq uint64) ([]byte, int) {
	start := len(b)
	b = append(b, make([]byte, 8)...)
	return binary.LittleEndian.AppendUint64(b, seq), start
}

// EndRecord fills in the length and checksum of the record that starts at
// start in b, whose payload is the rest of b.
func EndRecord(b []byte, start int) []byte {
	binary.LittleEndian.PutUint32(b[start:], uint32(len(b)-start-HeaderSize))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(b[start+8:], crcTable))
	return b
}

// ReadRun reads the records of r from off, each ending at or before end,
// as far as each one is whole (its checksum matches) and follows the one
// before (sequence + 1), and calls fn with each; fn's payload is its own.
// It returns the offset after the last record read. An error of fn stops
// the reading and is returned.
func ReadRun(r io.ReaderAt, off, end int64, fn func(seq uint64, payload []byte) error) (int64, error) {
	var prev uint64
	var hdr [HeaderSize]byte
	for off+HeaderSize <= end {
		if _, err := r.ReadAt(hdr[:], off); err != nil {
			return off, err
		}
		n := int64(binary.LittleEndian.Uint32(hdr[0:]))
		sum := binary.LittleEndian.Uint32(hdr[4:])
		seq := binary.LittleEndian.Uint64(hdr[8:])
		if n == 0 || n > MaxPayload || off+HeaderSize+n > end {
			break
		}
		if prev != 0 && seq != prev+1 {
			break
		}
		rec := make([]byte, 8+n)
		copy(rec, hdr[8:])
		if _, err := r.ReadAt(rec[8:], off+HeaderSize); err != nil {
			return off, err
		}
		if crc32.Checksum(rec, crcTable) != sum {
			break
		}
		off += HeaderSize + n
		prev = seq
		if err := fn(seq, rec[8:]); err != nil {
			return off, err
		}
	}
	return off, nil
}

// Grow makes f, of size bytes, at least end bytes long, in zero-filled
// steps of GrowStep, syncs it, and returns its new size. Appends into the
// zeros then change neither the file's size nor its blocks, so that their
// fdatasync writes data only.
func Grow(f *os.File, size, end int64) (int64, error) {
	if end <= size {
		return size, nil
	}
	want := (end + GrowStep - 1) / GrowStep * GrowStep
	zeros := make([]byte, 64<<10)
	for off := size; off < want; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), want-off)], off); err != nil {
			return size, err
		}
	}
	if err := f.Sync(); err != nil {
		return size, err
	}
	return want, nil
}
