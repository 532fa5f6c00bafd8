// Package dpdk is vhostd's thin cgo binding to DPDK 22.11 (Debian's
// libdpdk-dev, `#cgo pkg-config: libdpdk`): EAL init and cleanup, packet
// mbuf pools, ethdev probe of a devargs string, configure, queue setup,
// start, stop, close, link status, basic and extended stats, burst
// receive and transmit, and the receive queue's interrupt fd. It holds
// only what the uplink port needs.
//
// # Threads
//
// DPDK's control plane runs on one OS thread: Init starts a goroutine
// locked to its thread for good, calls rte_eal_init there (which makes it
// the main lcore and pins it to the main lcore's CPU), and then runs every
// control call (probe, configure, start, stop, close, pool create and
// free, cleanup) on it. When Cleanup ends, the goroutine exits still
// locked, so the thread and its CPU pinning go away with it instead of
// returning to the Go scheduler.
//
// Data-path calls (RxQueue.Receive, TxQueue.Flush, RxQueue.EnableInterrupt
// and DisableInterrupt, link and stats reads) run on the caller's thread.
// A thread that calls them often should call RegisterThread once: it gets
// an lcore id, so the mempool's per-lcore cache is used (unregistered
// threads go to the pool's ring directly, which is correct but slower).
//
// # Cgo cost
//
// Each burst is one cgo call: C helpers loop over the burst. Receive
// returns each frame's segments as views of mbuf memory (no copy, no
// allocation); transmit copies frames in Go into mbufs taken from a
// pre-allocated stash, then one call chains, transmits, frees what the
// device refused and refills the stash. The per-queue scratch the helpers
// fill lives in C memory, so no Go pointer is ever handed to C.
//
// Without cgo (CGO_ENABLED=0) the package holds only its pure-Go parts
// (EAL argument building).
package dpdk
