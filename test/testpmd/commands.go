package testpmd

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// MaxBurst is testpmd's largest burst (MAX_PKT_BURST).
const MaxBurst = 512

// ErrForwarding is returned by StartTxFirst and StartFwd when testpmd is
// already forwarding.
var ErrForwarding = errors.New("testpmd: packet forwarding already started")

// Stats runs "show port stats all" and parses it.
func (t *TestPMD) Stats(ctx context.Context) ([]PortStats, error) {
	out, err := t.Cmd(ctx, "show port stats all")
	if err != nil {
		return nil, err
	}
	return ParsePortStats(out)
}

// ClearStats runs "clear port stats all": the ethdev counters of every port
// restart from zero.
func (t *TestPMD) ClearStats(ctx context.Context) error {
	out, err := t.Cmd(ctx, "clear port stats all")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "cleared") {
		return fmt.Errorf("testpmd: clear port stats all: unexpected answer %q", out)
	}
	return nil
}

// SetForward runs "set fwd MODE" ("io", "mac", "rxonly", "txonly", ...; a
// trailing " retry" makes the forwarding streams retry a TX burst that did
// not fit the ring, instead of dropping the rest at once).
func (t *TestPMD) SetForward(ctx context.Context, mode string) error {
	out, err := t.Cmd(ctx, "set fwd "+mode)
	if err != nil {
		return err
	}
	name := strings.Fields(mode)
	if len(name) == 0 || !strings.Contains(out, "Set "+name[0]+" packet forwarding mode") {
		return fmt.Errorf("testpmd: set fwd %s: unexpected answer %q", mode, out)
	}
	return nil
}

// SetBurst runs "set burst N" (1..MaxBurst): the number of frames per
// RX/TX burst of the forwarding streams, and per tx_first burst.
func (t *TestPMD) SetBurst(ctx context.Context, n int) error {
	if n < 1 || n > MaxBurst {
		return fmt.Errorf("testpmd: burst %d out of range 1..%d", n, MaxBurst)
	}
	out, err := t.Cmd(ctx, fmt.Sprintf("set burst %d", n))
	if err != nil {
		return err
	}
	if !strings.Contains(out, fmt.Sprintf("set to %d", n)) {
		return fmt.Errorf("testpmd: set burst %d: %s", n, strings.TrimSpace(out))
	}
	return nil
}

// SetEthPeer runs "set eth-peer PORT MAC": the destination MAC of frames
// generated or mac-forwarded on port.
func (t *TestPMD) SetEthPeer(ctx context.Context, port int, mac string) error {
	if !macRe.MatchString(mac) {
		return fmt.Errorf("testpmd: bad MAC %q", mac)
	}
	out, err := t.Cmd(ctx, fmt.Sprintf("set eth-peer %d %s", port, mac))
	if err != nil {
		return err
	}
	if s := strings.TrimSpace(out); s != "" {
		return fmt.Errorf("testpmd: set eth-peer %d %s: %s", port, mac, s)
	}
	return nil
}

func checkStarted(cmd, out string) error {
	if strings.Contains(out, "Packet forwarding already started") {
		return ErrForwarding
	}
	for _, bad := range []string{"Not all ports were started", "Packet forwarding is not ready", "cannot use"} {
		if strings.Contains(out, bad) {
			return fmt.Errorf("testpmd: %s: %s", cmd, strings.TrimSpace(out))
		}
	}
	return nil
}

// StartFwd runs "start": forwarding in the current mode.
func (t *TestPMD) StartFwd(ctx context.Context) error {
	out, err := t.Cmd(ctx, "start")
	if err != nil {
		return err
	}
	return checkStarted("start", out)
}

// StartTxFirst runs "start tx_first N" (N >= 1): every forwarding stream
// (one per port) first transmits N bursts of "burst" frames from its port
// to its eth-peer MAC, one txonly burst per stream per round; then
// forwarding goes on in the current mode. It resets the counters that Stop
// reports, not the port counters of Stats.
func (t *TestPMD) StartTxFirst(ctx context.Context, n int) error {
	if n < 1 {
		return fmt.Errorf("testpmd: tx_first count %d < 1", n)
	}
	cmd := fmt.Sprintf("start tx_first %d", n)
	out, err := t.Cmd(ctx, cmd)
	if err != nil {
		return err
	}
	return checkStarted(cmd, out)
}

// Stop runs "stop" and returns the forward statistics it prints (per port,
// then the accumulated entry with Port -1). When forwarding was not
// running it returns nil and no error.
func (t *TestPMD) Stop(ctx context.Context) ([]FwdStats, error) {
	out, err := t.Cmd(ctx, "stop")
	if err != nil {
		return nil, err
	}
	if strings.Contains(out, "Packet forwarding not started") {
		return nil, nil
	}
	return ParseFwdStats(out)
}

// LinkState is one row of "show port summary all".
type LinkState struct {
	// Port is the DPDK port id.
	Port int
	// MAC is the port's MAC address, Name its device name, Driver its PMD.
	MAC, Name, Driver string
	// Up tells whether the link is up.
	Up bool
}

var summaryRowRe = regexp.MustCompile(`(?m)^(\d+)\s+([0-9A-Fa-f:]{17})\s+(\S+)\s+(\S+)\s+(up|down)\b`)

// ParsePortSummary parses "show port summary all".
func ParsePortSummary(out string) []LinkState {
	var res []LinkState
	for _, m := range summaryRowRe.FindAllStringSubmatch(out, -1) {
		p, _ := strconv.Atoi(m[1])
		res = append(res, LinkState{Port: p, MAC: m[2], Name: m[3], Driver: m[4], Up: m[5] == "up"})
	}
	return res
}

// Links runs "show port summary all".
func (t *TestPMD) Links(ctx context.Context) ([]LinkState, error) {
	out, err := t.Cmd(ctx, "show port summary all")
	if err != nil {
		return nil, err
	}
	return ParsePortSummary(out), nil
}

// WaitLinksUp polls the port summary every 50 ms until every port's link is
// up, or ctx ends.
func (t *TestPMD) WaitLinksUp(ctx context.Context) error {
	var last []LinkState
	for {
		ls, err := t.Links(ctx)
		if err != nil {
			return err
		}
		last = ls
		up := len(ls) > 0
		for _, l := range ls {
			up = up && l.Up
		}
		if up {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testpmd: links not up: %+v: %w", last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// StartClosedLoop sets up the closed loop of LAB.md and starts it: "set fwd
// mac", then "start tx_first N" (N bursts of 32 frames per port seed the
// loop; with 256-entry rings, 7 is the most that nothing drops: see
// docs/bench.md). The ports' eth-peer MACs must point at each other (Config
// PeerMACs or SetEthPeer), so the backend keeps carrying the same frames
// round and round at the highest rate the pair sustains.
func (t *TestPMD) StartClosedLoop(ctx context.Context, bursts int) error {
	if err := t.SetForward(ctx, "mac"); err != nil {
		return err
	}
	return t.StartTxFirst(ctx, bursts)
}

// Rate is the result of Measure: per-port and total frame rates over one
// window.
type Rate struct {
	// Elapsed is the time between the two stats snapshots.
	Elapsed time.Duration
	// RxPPS and TxPPS are per port (indexed like Stats).
	RxPPS, TxPPS []float64
	// TotalRxPPS and TotalTxPPS sum the ports.
	TotalRxPPS, TotalTxPPS float64
	// Before and After are the two snapshots.
	Before, After []PortStats
}

// Measure takes "show port stats all" twice, window apart, and returns the
// rates from the counter differences over the elapsed wall-clock time
// (measured between the two answers; the pipe round trip is well under a
// millisecond).
func (t *TestPMD) Measure(ctx context.Context, window time.Duration) (Rate, error) {
	a, err := t.Stats(ctx)
	if err != nil {
		return Rate{}, err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return Rate{}, ctx.Err()
	case <-time.After(window):
	}
	b, err := t.Stats(ctx)
	if err != nil {
		return Rate{}, err
	}
	el := time.Since(t0)
	if len(a) != len(b) {
		return Rate{}, fmt.Errorf("testpmd: port count changed from %d to %d", len(a), len(b))
	}
	r := Rate{Elapsed: el, Before: a, After: b}
	sec := el.Seconds()
	for i := range a {
		rx := float64(b[i].RxPackets-a[i].RxPackets) / sec
		tx := float64(b[i].TxPackets-a[i].TxPackets) / sec
		r.RxPPS = append(r.RxPPS, rx)
		r.TxPPS = append(r.TxPPS, tx)
		r.TotalRxPPS += rx
		r.TotalTxPPS += tx
	}
	return r, nil
}

// MeasureRate returns the frames per second received over all ports during
// window (see Measure). In the closed loop (StartClosedLoop) this is the
// total rate the backend moves, both directions together.
func (t *TestPMD) MeasureRate(ctx context.Context, window time.Duration) (float64, error) {
	r, err := t.Measure(ctx, window)
	if err != nil {
		return 0, err
	}
	return r.TotalRxPPS, nil
}

// SendOptions tunes SendExact.
type SendOptions struct {
	// Round is the number of frames each port sends per round (one "start
	// tx_first 1" with "set burst Round"); default 128, at most MaxBurst.
	// A round must fit the virtio rings (256 descriptors by default): the
	// frames of one round are all queued before the receiving loop runs,
	// and testpmd drops what does not fit (SendExact then fails).
	Round int
	// Settle is how long the RX counters must stay unchanged before a round
	// counts as finished when fewer frames came back than were sent
	// (frames lost or not looped back); default 200 ms.
	Settle time.Duration
	// Poll is the interval between stats polls while a round is in
	// flight; default 1 ms.
	Poll time.Duration
}

// SendExact makes every port send exactly perPort frames to its eth-peer
// MAC (TxPkts bytes long) and returns the port counters afterwards, counted
// from zero (it clears them first). It stops forwarding, switches to
// "rxonly", and runs rounds of "set burst R" + "start tx_first 1" + wait +
// "stop": each port transmits R frames in one burst, then only receives.
// A round ends when as many frames have been received over all ports as
// were sent, or when RX stayed unchanged for Settle. It fails when testpmd
// could not queue a frame (its TX-dropped counter), so on success the
// TxPackets of every port is exactly perPort; compare the RX side to see
// what the backend delivered. Forwarding is left stopped in rxonly mode.
//
// With several queue pairs (Port.Queues) a round sends on every transmit
// queue of every port (one burst per forwarding stream), so perPort must
// be a multiple of the queues: each queue sends perPort/queues frames.
func (t *TestPMD) SendExact(ctx context.Context, perPort int, opt SendOptions) ([]PortStats, error) {
	if opt.Round == 0 {
		opt.Round = 128
	}
	if opt.Round < 1 || opt.Round > MaxBurst {
		return nil, fmt.Errorf("testpmd: SendExact round %d out of range 1..%d", opt.Round, MaxBurst)
	}
	if opt.Settle == 0 {
		opt.Settle = 200 * time.Millisecond
	}
	if opt.Poll == 0 {
		opt.Poll = time.Millisecond
	}
	if perPort < 0 {
		return nil, fmt.Errorf("testpmd: SendExact count %d < 0", perPort)
	}
	queues := t.queues()
	if perPort%queues != 0 {
		return nil, fmt.Errorf("testpmd: SendExact count %d is not a multiple of the %d transmit queues of each port", perPort, queues)
	}
	if _, err := t.Stop(ctx); err != nil {
		return nil, err
	}
	if err := t.SetForward(ctx, "rxonly"); err != nil {
		return nil, err
	}
	if err := t.ClearStats(ctx); err != nil {
		return nil, err
	}
	burst := -1
	for sent := 0; sent < perPort; {
		c := min(opt.Round, (perPort-sent)/queues) // per queue
		if c != burst {
			if err := t.SetBurst(ctx, c); err != nil {
				return nil, err
			}
			burst = c
		}
		if err := t.StartTxFirst(ctx, 1); err != nil {
			return nil, err
		}
		sent += c * queues
		werr := t.waitRound(ctx, opt)
		fs, err := t.Stop(ctx)
		if werr != nil {
			return nil, werr
		}
		if err != nil {
			return nil, err
		}
		for _, f := range fs {
			if f.Port >= 0 && (f.TxPackets != uint64(c*queues) || f.TxDropped != 0) {
				return nil, fmt.Errorf("testpmd: SendExact: port %d queued %d of %d frames in a round (TX-dropped %d): round too large for the rings?",
					f.Port, f.TxPackets, c*queues, f.TxDropped)
			}
		}
	}
	// Frames received after the last round's stop sit in the RX rings:
	// they were counted if waitRound saw them, so stats are final here.
	st, err := t.Stats(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range st {
		if s.TxPackets != uint64(perPort) {
			return st, fmt.Errorf("testpmd: SendExact: port %d TX-packets %d, want %d", s.Port, s.TxPackets, perPort)
		}
	}
	return st, nil
}

// waitRound polls the port counters until total RX has caught up with total
// TX, or RX has not moved for opt.Settle.
func (t *TestPMD) waitRound(ctx context.Context, opt SendOptions) error {
	var lastRx uint64
	lastChange := time.Now()
	for {
		st, err := t.Stats(ctx)
		if err != nil {
			return err
		}
		var rx, tx uint64
		for _, s := range st {
			rx += s.RxPackets
			tx += s.TxPackets
		}
		if rx >= tx {
			return nil
		}
		if rx != lastRx {
			lastRx, lastChange = rx, time.Now()
		} else if time.Since(lastChange) >= opt.Settle {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(opt.Poll):
		}
	}
}

// VhostBackendConfig returns the Config of DPDK's own vhost-user backend
// (LAB.md's reference): one net_vhost port in server mode per socket, io
// forwarding (port 0 <-> port 1, port 2 <-> port 3, ...), started at once,
// all on one CPU (a taskset CPU number, e.g. "1") with lcores 0@CPU,1@CPU.
func VhostBackendConfig(cpu string, sockets ...string) Config {
	c := Config{
		CPUs:        cpu,
		ForwardMode: "io",
		AutoStart:   true,
	}
	for _, s := range sockets {
		c.VhostPorts = append(c.VhostPorts, VhostPort{Socket: s})
	}
	return c
}
