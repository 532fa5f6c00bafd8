package vhost_test

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhost"
	vt "github.com/vhostd/vhostd/vhost/vhosttest"
)

// TestUnimplementedNamedAndNacked: a request vhostd does not implement is
// named in the error, NACKed when the frontend asked for a reply (with or
// without REPLY_ACK negotiated), its fds closed, and the connection
// dropped.
func TestUnimplementedNamedAndNacked(t *testing.T) {
	s, path := serve(t, vhost.Options{}, &recorder{})
	cases := []struct {
		name     string
		req      uint32
		payload  []byte
		withFD   bool
		replyAck bool
		want     string
	}{
		{"SET_LOG_BASE acked", 6, make([]byte, 16), false, true, "SET_LOG_BASE (6): not implemented"},
		{"SET_LOG_FD with fd", 7, nil, true, true, "SET_LOG_FD (7): not implemented"},
		{"SEND_RARP without REPLY_ACK", 19, make([]byte, 8), false, false, "SEND_RARP (19): not implemented"},
		{"CHECK_DEVICE_STATE", 43, nil, false, true, "CHECK_DEVICE_STATE (43): not implemented"},
		{"unknown code", 999, nil, false, true, "request 999 (999): not implemented"},
	}
	before := openFDs(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := dial(t, path)
			var pf uint64
			if c.replyAck {
				pf = pReplyAck
			}
			if _, err := f.Negotiate(fVersion1|fProtocol, pf); err != nil {
				t.Fatal(err)
			}
			var fds []int
			if c.withFD {
				efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
				if err != nil {
					t.Fatal(err)
				}
				defer unix.Close(efd)
				fds = append(fds, efd)
			}
			if err := f.Send(c.req, vt.FlagVersion|vt.FlagNeedReply, c.payload, fds...); err != nil {
				t.Fatal(err)
			}
			if err := f.Ack(c.req); err == nil || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("ack: %v; want a NACK", err)
			}
			if !f.Closed() {
				t.Fatal("connection kept")
			}
			waitDisconnected(t, s)
			if got := s.Status().LastError; !strings.Contains(got, c.want) {
				t.Fatalf("last error %q, want %q", got, c.want)
			}
		})
	}
	waitFDs(t, before)
}
