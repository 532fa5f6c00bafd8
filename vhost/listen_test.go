package vhost_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhost"
)

// nobodyGID is the group the tests give sockets: nogroup on Debian.
const nobodyGID = 65534

func testPerm(t *testing.T) vhost.SocketPerm {
	perm := vhost.SocketPerm{Mode: 0o660}
	if os.Geteuid() == 0 {
		perm.GID, perm.SetGID = nobodyGID, true
	} else {
		t.Log("not root: checking the mode only")
	}
	return perm
}

// checkSocket fails unless path is a socket with perm's mode and group.
func checkSocket(t *testing.T, path string, perm vhost.SocketPerm) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || os.FileMode(st.Mode&0o7777) != perm.Mode {
		t.Fatalf("%s: mode %#o, want a socket with %#o", path, st.Mode, perm.Mode)
	}
	if perm.SetGID && int(st.Gid) != perm.GID {
		t.Fatalf("%s: gid %d, want %d", path, st.Gid, perm.GID)
	}
}

// TestListenSocketPerm: the socket has its mode and group from the moment
// its path exists. A watcher stats the path as fast as it can while the
// socket is created and removed over and over: it must never find it
// with other permissions (with a chmod after bind, it would, with the
// umask's). Nothing is left in the directory but the socket.
func TestListenSocketPerm(t *testing.T) {
	// A umask that would give the socket other bits than the ones asked.
	defer unix.Umask(unix.Umask(0o002))
	dir := t.TempDir()
	path := filepath.Join(dir, "vm.sock")
	perm := testPerm(t)
	var stop atomic.Bool
	var seen, bad atomic.Int64
	var badMode atomic.Uint32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var st unix.Stat_t
		for !stop.Load() {
			if unix.Lstat(path, &st) != nil {
				continue
			}
			seen.Add(1)
			if os.FileMode(st.Mode&0o7777) != perm.Mode || (perm.SetGID && int(st.Gid) != perm.GID) {
				bad.Add(1)
				badMode.Store(st.Mode)
			}
		}
	}()
	for i := 0; i < 200; i++ {
		s, err := vhost.Listen(path, vhost.Options{Perm: perm}, &recorder{}, quiet())
		if err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatal(err)
		}
		if i == 0 {
			checkSocket(t, path, perm)
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 || ents[0].Name() != "vm.sock" {
				t.Fatalf("directory holds %v, want the socket only", ents)
			}
			go s.Serve()
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			c.Close()
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Fatalf("socket left after Close: %v", err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() > 0 {
		t.Fatalf("the path was seen %d times with wrong permissions (mode %#o)", bad.Load(), badMode.Load())
	}
	if seen.Load() == 0 {
		t.Fatal("the watcher never saw the socket: the test proves nothing")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

// TestCloseLeavesAnotherSocket: Close removes the path only while it is
// still our socket, not one another process put there since.
func TestCloseLeavesAnotherSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm.sock")
	s, err := vhost.Listen(path, vhost.Options{}, &recorder{}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	other, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("Close removed another process's socket: %v", err)
	}
}

// TestListenLongPath: a path that fits a socket address but not with the
// private directory's name added is still created there.
func TestListenLongPath(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, strings.Repeat("d", 99-len(base)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "v.sock") // 107 bytes, the most there is room for
	perm := testPerm(t)
	s, err := vhost.Listen(path, vhost.Options{Perm: perm}, &recorder{}, quiet())
	if err != nil {
		t.Fatalf("%d-byte path: %v", len(path), err)
	}
	checkSocket(t, path, perm)
	go s.Serve()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Close()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
	if _, err := vhost.Listen(filepath.Join(dir, strings.Repeat("x", 20)), vhost.Options{}, &recorder{}, quiet()); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("too long a path: %v", err)
	}
}

func TestListenBadMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm.sock")
	if _, err := vhost.Listen(path, vhost.Options{Perm: vhost.SocketPerm{Mode: 0o4770}}, &recorder{}, quiet()); err == nil {
		t.Fatal("setuid mode accepted")
	}
}
