// Package pgtest runs a throwaway PostgreSQL server for a test package:
// TestMain calls Main, which starts one cluster (initdb and pg_ctl from
// Debian's postgresql package, under /usr/lib/postgresql/NN/bin) in a
// temporary directory, listening on 127.0.0.1 on a free port, runs the
// tests and removes the cluster; each test asks DSN for a fresh database.
// When the server binaries are not installed, tests that need one skip,
// saying so; when they are installed but the cluster cannot start, those
// tests fail.
//
// initdb refuses to run as root, so as root the cluster is made and run as
// the postgres user (runuser), in a directory it owns.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BinGlob is where the server binaries are looked for; the highest
// installed major version is used.
const BinGlob = "/usr/lib/postgresql/*/bin"

// ErrNotInstalled is returned by Start when no server binaries are found.
var ErrNotInstalled = errors.New("pgtest: PostgreSQL server binaries not installed (" + BinGlob + "/initdb; Debian package postgresql)")

// Cluster is a running throwaway server.
type Cluster struct {
	// Port is the TCP port it listens on, on 127.0.0.1.
	Port int
	bin  string
	dir  string
	as   string // user to run the server as; "" the current one
	opts string // the server's options, for StartServer
	dbs  atomic.Int64

	// The watchdog stops the server and removes its directory when its
	// stdin, held by this process, closes: at Stop, or when this process
	// dies without calling it (a panicking test, a test timeout, a kill).
	watchdog *exec.Cmd
	guard    io.WriteCloser
	stopOnce sync.Once
}

// Bin returns the directory of the newest installed server binaries, or
// ErrNotInstalled (another error with RequireEnv set).
func Bin() (string, error) {
	dirs, _ := filepath.Glob(BinGlob)
	var best string
	bestV := -1
	for _, d := range dirs {
		v, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			continue
		}
		if v > bestV {
			best, bestV = d, v
		}
	}
	if best == "" {
		if os.Getenv(RequireEnv) != "" {
			// Not ErrNotInstalled: the tests fail instead of skipping.
			return "", fmt.Errorf("%s is set: %w", RequireEnv, errors.New(ErrNotInstalled.Error()))
		}
		return "", ErrNotInstalled
	}
	return best, nil
}

// RequireEnv, when set in the environment (CI sets it), makes missing
// server binaries fail the PostgreSQL tests rather than skip them.
const RequireEnv = "TRACKRELAY_REQUIRE_POSTGRES"

// Start makes and starts a cluster. fsync is off: the cluster is for
// functional tests, whose data need not survive a power loss.
func Start() (*Cluster, error) { return start(false) }

// StartDurable makes and starts a cluster with fsync on, as a production
// server runs: for benchmarks and durability tests.
func StartDurable() (*Cluster, error) { return start(true) }

func start(fsync bool) (*Cluster, error) {
	bin, err := Bin()
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin}
	if os.Geteuid() == 0 {
		c.as = "postgres"
	}
	if c.dir, err = os.MkdirTemp("", "pgtest-"); err != nil {
		return nil, err
	}
	if c.as != "" {
		u, err := user.Lookup(c.as)
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("pgtest: running as root needs the %s user: %w", c.as, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(c.dir, uid, gid); err != nil {
			c.Stop()
			return nil, err
		}
	}
	data := filepath.Join(c.dir, "data")
	if out, err := c.run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
		"--locale=C.UTF-8", "--no-sync"); err != nil {
		c.Stop()
		return nil, fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	// A free port may be taken between its probe and the server's bind:
	// try a few.
	for range 5 {
		if c.Port, err = freePort(); err != nil {
			c.Stop()
			return nil, err
		}
		opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200", c.Port, c.dir)
		if !fsync {
			opts += " -c fsync=off"
		}
		var out []byte
		c.opts = opts
		if out, err = c.run("pg_ctl", "-D", data, "-l", filepath.Join(c.dir, "log"), "-w", "-t", "60", "-o", opts, "start"); err == nil {
			if err := c.startWatchdog(); err != nil {
				c.Stop()
				return nil, err
			}
			return c, nil
		}
		log, _ := os.ReadFile(filepath.Join(c.dir, "log"))
		err = fmt.Errorf("pgtest: pg_ctl start: %w\n%s\n%s", err, out, log)
	}
	c.Stop()
	return nil, err
}

func (c *Cluster) run(prog string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, prog)
	var cmd *exec.Cmd
	if c.as != "" {
		cmd = exec.Command("runuser", slices.Concat([]string{"-u", c.as, "--", path}, args)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = c.dir
	return cmd.CombinedOutput()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startWatchdog starts the process that stops the server once this one
// closes its stdin or exits. It runs in its own process group, so that an
// interrupt of the test run reaches it only through that pipe.
func (c *Cluster) startWatchdog() error {
	script := `cat >/dev/null; "$0" -D "$1" -m fast -w stop >/dev/null 2>&1; rm -rf "$2"`
	args := []string{"-c", script, filepath.Join(c.bin, "pg_ctl"), filepath.Join(c.dir, "data"), c.dir}
	if c.as != "" {
		c.watchdog = exec.Command("runuser", slices.Concat([]string{"-u", c.as, "--", "sh"}, args)...)
	} else {
		c.watchdog = exec.Command("sh", args...)
	}
	ownGroup(c.watchdog)
	var err error
	if c.guard, err = c.watchdog.StdinPipe(); err != nil {
		return err
	}
	if err := c.watchdog.Start(); err != nil {
		return fmt.Errorf("pgtest: start the watchdog: %w", err)
	}
	return nil
}

// Stop stops the server and removes its directory.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		if c.watchdog != nil {
			c.guard.Close()
			c.watchdog.Wait()
		} else if c.Port != 0 {
			c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "fast", "-w", "stop")
		}
		os.RemoveAll(c.dir)
	})
}

// StopServer stops the server and keeps its data, as an outage does:
// connections are closed and new ones refused until StartServer.
func (c *Cluster) StopServer() error {
	if out, err := c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "fast", "-w", "stop"); err != nil {
		return fmt.Errorf("pgtest: pg_ctl stop: %w\n%s", err, out)
	}
	return nil
}

// StartServer starts the server stopped by StopServer again, on the same
// port.
func (c *Cluster) StartServer() error {
	data := filepath.Join(c.dir, "data")
	if out, err := c.run("pg_ctl", "-D", data, "-l", filepath.Join(c.dir, "log"), "-w", "-t", "60", "-o", c.opts, "start"); err != nil {
		return fmt.Errorf("pgtest: pg_ctl start: %w\n%s", err, out)
	}
	return nil
}

// URL returns the connection URI of database db.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

// CreateDB creates a new, empty database and returns its connection URI.
func (c *Cluster) CreateDB(ctx context.Context) (string, error) {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return "", fmt.Errorf("pgtest: connect: %w", err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("t%d", c.dbs.Add(1))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("pgtest: create database: %w", err)
	}
	return c.URL(name), nil
}

var (
	mu       sync.Mutex
	cluster  *Cluster
	startErr error
)

// Main is a test package's TestMain: it starts the package's cluster,
// runs the tests and stops the cluster. Call it as
// os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	c, err := Start()
	mu.Lock()
	cluster, startErr = c, err
	mu.Unlock()
	if err != nil && !errors.Is(err, ErrNotInstalled) {
		fmt.Fprintln(os.Stderr, strings.TrimSpace(err.Error()))
	}
	code := m.Run()
	if c != nil {
		c.Stop()
	}
	return code
}

// Current returns the package's cluster. It skips t when the server
// binaries are not installed, and fails it when the cluster did not start.
func Current(t testing.TB) *Cluster {
	t.Helper()
	mu.Lock()
	c, err := cluster, startErr
	mu.Unlock()
	switch {
	case errors.Is(err, ErrNotInstalled):
		t.Skip(err.Error())
	case err != nil:
		t.Fatalf("throwaway PostgreSQL: %v", err)
	case c == nil:
		t.Fatal("pgtest: no cluster: call pgtest.Main from TestMain")
	}
	return c
}

// Own starts a cluster of t's own (for a test that stops and starts its
// server), stopped when t ends, and returns it with the connection URI of
// a fresh database on it. Like Current, it skips t when the server
// binaries are not installed (unless RequireEnv is set) and fails it when
// the cluster does not start.
func Own(t testing.TB) (*Cluster, string) {
	t.Helper()
	c, err := Start()
	if errors.Is(err, ErrNotInstalled) {
		t.Skip(err.Error())
	}
	if err != nil {
		t.Fatalf("throwaway PostgreSQL: %v", err)
	}
	t.Cleanup(c.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn, err := c.CreateDB(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, dsn
}

// DSN returns the connection URI of a fresh database on the package's
// cluster (see Current).
func DSN(t testing.TB) string {
	t.Helper()
	c := Current(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn, err := c.CreateDB(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}
