package guestmem

import (
	"fmt"
	"runtime"
)

// A frontend can shrink the file behind its memory after the backend has
// mapped it (ftruncate on the memfd): the next access through the mapping
// then raises SIGBUS, which kills a Go program unless the goroutine runs
// with debug.SetPanicOnFault(true). With it, the fault becomes a
// runtime.Error panic carrying the faulting address, also inside the
// runtime's memmove (copy), since that runs on the goroutine's own stack.
// The helpers below let the goroutine that recovered it tell a guest's
// doing from a bug of its own.

// span is a range of host addresses.
type span struct{ base, len uintptr }

// Contains reports whether the host address addr lies in one of m's
// mappings. It is safe to call at any time, even while m is being
// unmapped; once m is unmapped it reports false, as its ranges may hold
// other mappings by then. A Memory that gave its mappings to another with
// Add or Remove (Detach) still reports them.
func (m *Memory) Contains(addr uintptr) bool {
	if m == nil || m.gone.Load() {
		return false
	}
	for _, s := range m.spans {
		if addr-s.base < s.len {
			return true
		}
	}
	return false
}

// FaultAddr returns the address of the memory fault that r, a value
// recovered on a goroutine running with debug.SetPanicOnFault(true),
// reports. ok is false for anything else, a nil dereference included (the
// runtime reports those without an address).
func FaultAddr(r any) (addr uintptr, ok bool) {
	if _, isRuntime := r.(runtime.Error); !isRuntime {
		return 0, false
	}
	a, ok := r.(interface{ Addr() uintptr })
	if !ok {
		return 0, false
	}
	return a.Addr(), true
}

// Fault is an access to guest memory that faulted: the frontend made part
// of Mem inaccessible behind the backend's back. The connection that
// shared Mem cannot be trusted any further.
type Fault struct {
	Addr uintptr // host address of the access
	Mem  *Memory // the guest memory holding Addr
}

// GuestMemory returns the memory that faulted, Mem.
func (f *Fault) GuestMemory() *Memory { return f.Mem }

func (f *Fault) Error() string {
	return fmt.Sprintf("guest memory fault at host address %#x: the frontend truncated or unmapped its memory", f.Addr)
}
