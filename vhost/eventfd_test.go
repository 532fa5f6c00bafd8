package vhost_test

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
)

// TestRingFDMustBeEventfd sends SET_VRING_KICK/CALL/ERR with fds that are
// not eventfds. Each must be refused with a NACK, closed, and the
// connection dropped with an error naming the request, the ring and the
// fd's kind; the server keeps serving.
func TestRingFDMustBeEventfd(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	type fdMaker func(t *testing.T) int
	pipeRead := func(t *testing.T) int {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		unix.Close(p[1])
		return p[0]
	}
	file := func(t *testing.T) int {
		f, err := os.CreateTemp(t.TempDir(), "ring")
		if err != nil {
			t.Fatal(err)
		}
		fd, _ := unix.Dup(int(f.Fd()))
		f.Close()
		return fd
	}
	sock := func(t *testing.T) int {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	memfd := func(t *testing.T) int {
		fd, err := unix.MemfdCreate("ring", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	cases := []struct {
		name string
		req  uint32
		ring uint64
		fd   fdMaker
		want string
	}{
		{"call pipe", vt.SetVringCall, 1, pipeRead, "SET_VRING_CALL: ring 1: fd is a pipe, not an eventfd"},
		{"kick file", vt.SetVringKick, 0, file, "SET_VRING_KICK: ring 0: fd is a regular file, not an eventfd"},
		{"err socket", vt.SetVringErr, 3, sock, "SET_VRING_ERR: ring 3: fd is a socket, not an eventfd"},
		{"kick memfd", vt.SetVringKick, 2, memfd, "SET_VRING_KICK: ring 2: fd is a memfd, not an eventfd"},
	}
	before := openFDs(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := dial(t, path)
			if _, err := f.Negotiate(fVersion1|fProtocol, pReplyAck); err != nil {
				t.Fatal(err)
			}
			fd := c.fd(t)
			err := f.Send(c.req, vt.FlagVersion|vt.FlagNeedReply, le64(c.ring), fd)
			unix.Close(fd) // the backend holds the only other reference
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Ack(c.req); err == nil || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("ack: %v; want a NACK", err)
			}
			if !f.Closed() {
				t.Fatal("connection kept after a non-eventfd ring fd")
			}
			waitDisconnected(t, s)
			if got := s.Status().LastError; !strings.Contains(got, c.want) {
				t.Fatalf("last error %q, want it to contain %q", got, c.want)
			}
			f.Close()
		})
	}
	// The refused fds were closed: nothing of them stays open here.
	waitFDs(t, before)
}

// TestRingFDMadeNonBlocking sends blocking eventfds as kick and call: the
// backend must accept them and set O_NONBLOCK on them (visible here, as
// the open file description is shared) before the data path uses them.
func TestRingFDMadeNonBlocking(t *testing.T) {
	_, path := serve(t, vhost.Options{}, &recorder{})
	f := dial(t, path)
	if _, err := f.Negotiate(fVersion1|fProtocol, pReplyAck); err != nil {
		t.Fatal(err)
	}
	for _, req := range []uint32{vt.SetVringKick, vt.SetVringCall, vt.SetVringErr} {
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC) // blocking
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(efd)
		if err := f.Send(req, vt.FlagVersion|vt.FlagNeedReply, le64(0), efd); err != nil {
			t.Fatal(err)
		}
		if err := f.Ack(req); err != nil {
			t.Fatalf("request %d with a blocking eventfd: %v", req, err)
		}
		fl, err := unix.FcntlInt(uintptr(efd), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fl&unix.O_NONBLOCK == 0 {
			t.Fatalf("request %d: eventfd still blocking after the backend accepted it", req)
		}
	}
}

// TestFullCallEventfdIgnored saturates a transmit ring's call eventfd (a
// write of 1 then fails with EAGAIN): the data path must ignore that
// error, as the driver is signalled already, and keep forwarding.
func TestFullCallEventfdIgnored(t *testing.T) {
	pathA, pathB, _ := twoPorts(t)
	feats := uint64(fVersion1 | fProtocol)
	b := connectGuest(t, pathB, feats)
	a := connectGuest(t, pathA, feats)
	var max [8]byte
	binary.LittleEndian.PutUint64(max[:], 0xfffffffffffffffe)
	if _, err := unix.Write(a.tx.Call, max[:]); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		exchange(t, a, b, 64+i)
	}
}

func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// waitDisconnected waits until the server has torn down its connection.
func waitDisconnected(t *testing.T, s *vhost.Server) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Status().Connected {
		if time.Now().After(deadline) {
			t.Fatal("server still connected")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
