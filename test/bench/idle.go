package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/vhost/vhosttest"
	"github.com/vhostd/vhostd/virtqueue/virtqueuetest"
)

// IdleProbe is one first-frame-after-idle measurement.
type IdleProbe struct {
	// CPU is vhostd's CPU use over the idle gap before the frame (the gap
	// starts right after the previous frame, so it includes any busy-poll
	// tail before vhostd goes to sleep).
	CPU CPUUse
	// First is the time from publishing the frame on VM A's transmit ring
	// (and kicking) until vhostd has published it in VM B's used ring.
	First time.Duration
	// Warm is the same for a second frame sent right after the first
	// (vhostd may be awake still, or may have gone back to sleep).
	Warm time.Duration
	// Floor is WakeFloor after the same idle gap, measured separately;
	// 0 if not measured.
	Floor time.Duration
}

// Frontend features the probe asks for, as a Linux guest's virtio-net
// would: VERSION_1, MRG_RXBUF, RING_EVENT_IDX, PROTOCOL_FEATURES; of the
// protocol features only REPLY_ACK.
const (
	probeFeatures = 1<<32 | 1<<30 | 1<<29 | 1<<15
	probeProtocol = 1 << 3
	probeRxBufs   = 64
	probeHdrLen   = 12 // virtio-net header with VERSION_1
	probeTimeout  = time.Second
)

// probeGuest is one fake VM: a Go vhost-user frontend (vhost/vhosttest)
// with a receive ring (0) and a transmit ring (1) in its own memfd.
type probeGuest struct {
	f      *vhosttest.Frontend
	rx, tx *vhosttest.Ring
	// used points at the receive ring's flags+idx word, read atomically
	// while spinning (the used ring is 4-byte aligned).
	used *uint32
}

func connectProbeGuest(path string) (*probeGuest, error) {
	f, err := vhosttest.Dial(path, 5*time.Second)
	if err != nil {
		return nil, err
	}
	g := &probeGuest{f: f}
	fail := func(err error) (*probeGuest, error) {
		g.close()
		return nil, fmt.Errorf("probe frontend on %s: %w", path, err)
	}
	if err := f.MapMemory(64<<20, 0x40000000, 0x7f1200000000); err != nil {
		return fail(err)
	}
	if _, err := f.Negotiate(probeFeatures, probeProtocol); err != nil {
		return fail(err)
	}
	if err := f.SetMemTable(true); err != nil {
		return fail(err)
	}
	if g.rx, err = f.SetupRing(0, 256, 0); err != nil {
		return fail(err)
	}
	if g.tx, err = f.SetupRing(1, 256, 16<<20); err != nil {
		return fail(err)
	}
	// A request with a reply is a barrier: the rings are set up.
	if _, err := f.GetU64(vhosttest.GetFeatures); err != nil {
		return fail(err)
	}
	g.used = (*uint32)(unsafe.Pointer(&g.rx.Driver.Mem[virtqueuetest.UsedBase]))
	for i := 0; i < probeRxBufs; i++ {
		g.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
	}
	g.rx.KickNow()
	return g, nil
}

func (g *probeGuest) close() {
	if g.rx != nil {
		g.rx.Close()
	}
	if g.tx != nil {
		g.tx.Close()
	}
	g.f.Close()
}

// usedIdx is the receive ring's used index.
func (g *probeGuest) usedIdx() uint16 { return uint16(atomic.LoadUint32(g.used) >> 16) }

// tidy returns used transmit chains and receive buffers to the driver,
// re-posts receive buffers, and drains the call eventfds.
func (g *probeGuest) tidy() {
	g.tx.Driver.CollectUsed()
	for range g.rx.Driver.CollectUsed() {
		g.rx.Driver.AddChain([]virtqueuetest.Buf{{Write: true, WriteLen: 2048}})
	}
	var b [8]byte
	unix.Read(g.rx.Call, b[:])
	unix.Read(g.tx.Call, b[:])
}

// send publishes one frame from g to dst and kicks, then spins until dst's
// receive ring has a new used entry; it returns the time from just before
// publishing to seeing it.
func (g *probeGuest) send(dst *probeGuest, frame []byte) (time.Duration, error) {
	before := dst.usedIdx()
	buf := append(make([]byte, probeHdrLen, probeHdrLen+len(frame)), frame...)
	t0 := time.Now()
	g.tx.Driver.AddChain([]virtqueuetest.Buf{{Data: buf}})
	g.tx.KickNow()
	for i := 0; ; i++ {
		if dst.usedIdx() != before {
			return time.Since(t0), nil
		}
		if i&1023 == 0 && time.Since(t0) > probeTimeout {
			return 0, fmt.Errorf("frame not delivered within %v", probeTimeout)
		}
	}
}

func ethFrame(dst, src string, n int) []byte {
	f := make([]byte, n)
	d, _ := parseMAC(dst)
	s, _ := parseMAC(src)
	copy(f[0:6], d)
	copy(f[6:12], s)
	f[12], f[13] = 0x88, 0xb5 // local experimental ethertype
	return f
}

func parseMAC(s string) ([]byte, error) {
	var b [6]byte
	if _, err := fmt.Sscanf(s, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]); err != nil {
		return nil, err
	}
	return b[:], nil
}

// IdleProbes starts a vhostd of its own (one poller, pinned to the backend
// CPU), connects two Go frontends, lets the switch learn both MACs, and
// then n times: waits opt.Idle, measuring vhostd's CPU use, sends one
// 64-byte frame A->B and times its delivery, then a second one at once.
// The spinning frontend runs on the generator CPU.
func IdleProbes(ctx context.Context, opt Options, tr *Tracker, logDir string, n int) ([]IdleProbe, error) {
	dir, err := tr.TempDir("vhb")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ctl := filepath.Join(dir, "ctl.sock")
	sa, sb := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	v, err := startVhostd(ctx, tr, filepath.Join(logDir, "idle-vhostd.log"), ctl, []string{
		"taskset", "-c", strconv.Itoa(opt.BackendCPU), opt.VhostdBin,
		"--control", ctl, "--log-level", "warn", "--socket", "a=" + sa, "--socket", "b=" + sb})
	if err != nil {
		return nil, err
	}
	defer v.Stop()

	// Spin on the generator's CPU, never on vhostd's.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set unix.CPUSet
	set.Set(opt.GenCPU)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("pin probe thread: %w", err)
	}

	a, err := connectProbeGuest(sa)
	if err != nil {
		return nil, err
	}
	defer a.close()
	b, err := connectProbeGuest(sb)
	if err != nil {
		return nil, err
	}
	defer b.close()
	toB, toA := ethFrame(macB, macA, 60), ethFrame(macA, macB, 60)
	// Learn both MACs (B first, so A's frames are switched, not flooded).
	if _, err := b.send(a, toA); err != nil {
		return nil, fmt.Errorf("learning B: %w", err)
	}
	if _, err := a.send(b, toB); err != nil {
		return nil, fmt.Errorf("learning A: %w", err)
	}
	var out []IdleProbe
	for i := 0; i < n; i++ {
		a.tidy()
		b.tidy()
		c0, err := ReadCPU(v.Pid())
		if err != nil {
			return out, err
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(opt.Idle):
		}
		c1, err := ReadCPU(v.Pid())
		if err != nil {
			return out, err
		}
		p := IdleProbe{CPU: Use(c0, c1)}
		if p.First, err = a.send(b, toB); err != nil {
			return out, fmt.Errorf("probe %d: %w", i+1, err)
		}
		if p.Warm, err = a.send(b, toB); err != nil {
			return out, fmt.Errorf("probe %d (warm): %w", i+1, err)
		}
		out = append(out, p)
	}
	// The floor last, with vhostd still connected and idle.
	floor, err := WakeFloor(ctx, opt.BackendCPU, opt.Idle, len(out))
	for i := range floor {
		out[i].Floor = floor[i]
	}
	return out, err
}
