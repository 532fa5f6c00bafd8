//go:build cgo

package dpdk

/*
#include <rte_errno.h>

static int vd_errno(void) { return rte_errno; }
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// Sentinel errors.
var (
	// ErrInitialized is returned by a second Init: DPDK's EAL can be
	// initialised once per process, even after Cleanup.
	ErrInitialized = errors.New("dpdk: EAL was already initialised in this process (DPDK allows it once per process)")
	// ErrClosed is returned by calls on an EAL after Cleanup, or on a
	// closed port or pool.
	ErrClosed = errors.New("dpdk: already closed")
)

// Error is a failed DPDK call: what was attempted, DPDK's errno and its
// message (rte_strerror), the lines DPDK logged at warning level or worse
// while the call ran, and, where vhostd knows one, what to try.
type Error struct {
	Op    string   // what was attempted, e.g. `probe "net_tap0,iface=x"`
	Errno int      // positive errno or DPDK error code
	Msg   string   // rte_strerror(Errno)
	Log   []string // DPDK's own complaints during the call
	Hint  string   // what to try, or ""
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", e.Op, e.Msg)
	if len(e.Log) > 0 {
		fmt.Fprintf(&b, " (DPDK: %s)", strings.Join(e.Log, "; "))
	}
	if e.Hint != "" {
		b.WriteString(": ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// Unwrap makes errors.Is(err, syscall.EEXIST) and friends work.
func (e *Error) Unwrap() error {
	if e.Errno > 0 && e.Errno < 1000 {
		return syscall.Errno(e.Errno)
	}
	return nil
}

// strerror returns DPDK's message for errno (which may be negative, as
// ethdev calls return it).
func strerror(errno int) string {
	if errno < 0 {
		errno = -errno
	}
	return C.GoString(C.rte_strerror(C.int(errno)))
}

// rteErrno returns the calling thread's rte_errno.
func rteErrno() int { return int(C.vd_errno()) }

// newError builds an Error for op from a return code (negative errno) and
// the DPDK log lines since mark.
func newError(op string, rc int, mark uint64) *Error {
	if rc < 0 {
		rc = -rc
	}
	return &Error{Op: op, Errno: rc, Msg: strerror(rc), Log: complaintsSince(mark)}
}
