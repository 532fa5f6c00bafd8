package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	vswitch "github.com/vhostd/vhostd/switch"
	"github.com/vhostd/vhostd/test/testpmd"
)

// The generator's port MACs: each port addresses the other, so a learning
// switch learns both and never floods once the loop runs.
const (
	macA = "02:00:00:00:00:0a"
	macB = "02:00:00:00:00:0b"
)

// Generator is dpdk-testpmd as the traffic generator: two net_virtio_user
// ports (a real virtio driver, as in a guest) in LAB.md's closed loop:
// "mac" forwarding seeded by "start tx_first", so whatever the backend
// delivers on one port is sent straight back to the other and the
// backend's rings stay full.
type Generator struct {
	tp *testpmd.TestPMD
}

// StartGenerator starts the generator on env's sockets (port 0 on a, port
// 1 on b or, in the VM-to-uplink topology, on the backend's uplink socket
// u), confined to cpu (--lcores 0@cpu,1@cpu: the CLI lcore and one
// forwarding lcore), and waits for both links. server makes its VM ports
// socket servers, for backends that connect to VM sockets as clients
// (OVS); the uplink port is always a client, the backend's net_vhost
// device serving u.
func StartGenerator(ctx context.Context, env RunEnv, cpu int, server bool) (*Generator, error) {
	mrg := env.Case.MrgRxbuf
	port := func(sock, mac string, server bool) testpmd.Port {
		return testpmd.Port{Socket: sock, MAC: mac, Server: server, MrgRxbuf: &mrg, Queues: max(env.Case.Queues, 1), PackedVQ: env.Case.Packed}
	}
	cfg := testpmd.Config{
		Ports:    []testpmd.Port{port(env.SockA(), macA, server), port(env.Sock1(), macB, server && !env.Uplink())},
		PeerMACs: []string{macB, macA},
		TxPkts:   env.Case.TxPkts(),
		CPUs:     strconv.Itoa(cpu),
		LogFile:  env.Log("generator"),
		// The generator's own cycles per frame (CostMark): which side
		// of the loop is the bottleneck in a repetition.
		ExtraArgs: []string{"--record-core-cycles"},
	}
	if env.HugeDir != "" {
		cfg.Binary, cfg.MemoryMB = env.Testpmd, hugeGenMB
		cfg.ExtraEALArgs = env.HugeEAL(true)
	}
	// A server-mode generator blocks in its port probe until the backend
	// has connected (OVS retries once a second): allow for that.
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tp, err := testpmd.Start(sctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("generator: %w", err)
	}
	env.Tracker.AddPID("dpdk-testpmd (generator)", tp.Pid())
	env.Tracker.AddPrefix(tp.FilePrefix())
	g := &Generator{tp: tp}
	if err := tp.WaitLinksUp(sctx); err != nil {
		g.Close()
		return nil, fmt.Errorf("generator: %w", err)
	}
	return g, nil
}

// Pid is the generator's process id.
func (g *Generator) Pid() int { return g.tp.Pid() }

// LoopOptions times one closed-loop run.
type LoopOptions struct {
	// SeedBursts is N of "start tx_first N": N bursts of 32 frames per
	// forwarding stream (one stream per port and queue); see SeedBursts.
	SeedBursts int
	// Warmup is skipped before the measured window; Window is its length.
	Warmup, Window time.Duration
	// Every is the sampling interval of the rate-over-time series.
	Every time.Duration
	// Mark, when set, is called right after the sample that opens the
	// window (end false) and right after the one that closes it (end
	// true): the backend's cost counters are read there.
	Mark func(end bool)
}

// RunLoop seeds the closed loop and samples the total RX counter of both
// ports every opt.Every from the seed until the window is covered: it
// starts at the first sample at or after Warmup and ends at the first
// sample Window later (so a slow stats answer delays the window rather than
// shortening it). Each sample's time is the midpoint of its "show port
// stats all" round trip, relative to the moment tx_first returned.
// Forwarding keeps running; call StopLoop.
func (g *Generator) RunLoop(ctx context.Context, opt LoopOptions) ([]Sample, error) {
	if err := g.tp.StartClosedLoop(ctx, opt.SeedBursts); err != nil {
		return nil, fmt.Errorf("generator: %w", err)
	}
	t0 := time.Now()
	winStart := -1.0
	var ss []Sample
	for k := 0; ; k++ {
		a := time.Now()
		st, err := g.tp.Stats(ctx)
		if err != nil {
			return ss, fmt.Errorf("generator: %w", err)
		}
		b := time.Now()
		var rx uint64
		for _, p := range st {
			rx += p.RxPackets
		}
		t := (a.Sub(t0) + b.Sub(a)/2).Seconds()
		ss = append(ss, Sample{T: t, RxPackets: rx})
		if winStart < 0 && t >= opt.Warmup.Seconds() {
			winStart = t
			if opt.Mark != nil {
				opt.Mark(false)
			}
		}
		if winStart >= 0 && t >= winStart+opt.Window.Seconds() {
			if opt.Mark != nil {
				opt.Mark(true)
			}
			return ss, nil
		}
		// Tick on a fixed grid from t0, so a slow answer does not shift
		// every later sample.
		next := t0.Add(time.Duration(k+1) * opt.Every)
		for !next.After(time.Now()) {
			k++
			next = t0.Add(time.Duration(k+1) * opt.Every)
		}
		select {
		case <-ctx.Done():
			return ss, ctx.Err()
		case <-time.After(time.Until(next)):
		}
	}
}

// StopLoop stops forwarding (no more frames leave the generator) and
// returns the frames the generator dropped since the seed (FwdDrops).
func (g *Generator) StopLoop(ctx context.Context) (uint64, error) {
	fs, err := g.tp.Stop(ctx)
	if err != nil {
		return 0, fmt.Errorf("generator: %w", err)
	}
	return FwdDrops(fs), nil
}

// FwdDrops sums what testpmd's forward statistics (the output of "stop")
// count as lost on every port: RX-dropped (the ethdev's imissed), RX
// errors, RX no-mbufs, and TX-dropped (frames the forwarding engine,
// tx_first's bursts included, could not put into a full TX ring).
func FwdDrops(fs []testpmd.FwdStats) uint64 {
	var n uint64
	for _, f := range fs {
		if f.Port >= 0 {
			n += f.RxDropped + f.RxErrors + f.RxNombufs + f.TxDropped
		}
	}
	return n
}

// Ring geometry of the generator's ports: DPDK virtio_user's default
// queue_size, and testpmd's default burst (tx_first sends bursts of it).
const (
	genRing  = 256
	genBurst = 32
)

// backendBurst is the most transmit descriptors a backend holds before
// it marks them used: vhostd's burst (switch.BurstSize); rte_vhost
// returns them as it copies (see SeedBursts).
const backendBurst = max(genBurst, vswitch.BurstSize)

// DefaultSeedFrames is how many frames per port (all its queues together)
// the default seed puts into the closed loop: one ring less one backend
// burst, in whole generator bursts (see SeedBursts).
const DefaultSeedFrames = (genRing - backendBurst) / genBurst * genBurst

// SeedBursts returns N of "start tx_first N" for case c. override > 0
// (--seed-bursts) wins. Otherwise the seed is DefaultSeedFrames per port,
// spread over its queues (tx_first sends N bursts on every stream, one
// stream per port and queue), at least one burst per stream.
//
// Why that many: frames keep their direction in the loop (a frame from
// port 0 to port 1's MAC is sent out of port 0 again), so each direction
// carries exactly the frames its port seeded, for good. While tx_first
// runs testpmd receives nothing, so they must all fit into the other
// port's receive ring (256 entries), or the backend drops the excess. And
// a backend may mark a burst's transmit descriptors used only after it
// has delivered the burst (vhostd does: it publishes the used ring once
// per burst), so the generator can get frames back and resend them while
// their old descriptors still hold the transmit ring: the ring must hold
// the seed plus one of the backend's bursts, or testpmd drops. Measured
// with vhostd's bursts of 32: 8 bursts lost exactly 32 frames per VM port,
// 7 none on any backend; with bursts of 64, 7 lose 32 per VM port and 6
// none (docs/bench.md, Seeding). vhostd delivers every queue of a port
// into receive queue 0 of the other, so the per-port total, not the
// per-queue count, must fit.
func SeedBursts(override int, c Case) int {
	if override > 0 {
		return override
	}
	per := DefaultSeedFrames / (genBurst * max(c.Queues, 1))
	return max(per, 1)
}

// CostMark returns the generator's forwarding cycles and frames received
// so far (--record-core-cycles, "show fwd stats all"): what each frame
// costs the generator, busy cycles only, as for dpdk-io.
func (g *Generator) CostMark(ctx context.Context) (CostMark, error) {
	out, err := g.tp.Cmd(ctx, "show fwd stats all")
	if err != nil {
		return CostMark{}, fmt.Errorf("generator: show fwd stats all: %w", err)
	}
	m, ok := ParseCoreCycles(out)
	if !ok {
		return CostMark{}, fmt.Errorf("generator: no CPU cycles/packet in show fwd stats all")
	}
	return m, nil
}

// Close quits the generator; the testpmd package removes its runtime
// directory and its server sockets.
func (g *Generator) Close() error { return g.tp.Close() }
