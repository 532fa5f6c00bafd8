// Command tsogen is the bench's TSO traffic generator: two DPDK
// net_virtio_user ports (a guest's virtio-net driver, no VM) on a
// backend's vhost-user sockets, with TCP segmentation offload negotiated
// (HOST_TSO4/6 for transmit, GUEST_TSO4/6 for receive). Port A sends
// 64 KiB TCP/IPv4 segments with TSO metadata (virtio-net header gso_type
// TCPV4, gso_size MSS, NEEDS_CSUM with the pseudo-header sum in the
// checksum field) as fast as the backend takes them; port B receives
// whatever the backend delivers (whole segments, or the MSS-sized frames
// it cut them into), verifies a sample and counts the payload bytes. The
// frames are prebuilt once and sent by reference (dpdk.Repeater), so the
// generator copies nothing: the backend's copies are what is measured.
//
// With -memcpy it instead measures one core's copy bandwidth on 64 KiB
// buffers (Go's copy, the routine vhostd's data path copies with).
//
// It prints one JSON Result on stdout. See docs/bench.md.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vhostd/vhostd/switch/dpdk"
	"github.com/vhostd/vhostd/virtqueue/bulkcopy"
)

// Result is what one run measured; the bench parses it.
type Result struct {
	// Refused says why the ports could not be set up with TSO (the
	// backend did not offer the features), empty when they were.
	Refused string `json:"refused,omitempty"`
	// TxCapa/RxCapa: the offloads the drivers offered after feature
	// negotiation with the backend.
	TxTSO bool `json:"tx_tso"`
	RxLRO bool `json:"rx_lro"`
	// Window counters: frames sent by A (each a 64 KiB segment), frames
	// and bytes received by B, TCP payload bytes received by B.
	Window       float64 `json:"window_s"`
	TxFrames     uint64  `json:"tx_frames"`
	RxFrames     uint64  `json:"rx_frames"`
	RxBytes      uint64  `json:"rx_bytes"`
	PayloadBytes uint64  `json:"payload_bytes"`
	// Gbps is the TCP payload delivered to B over the window.
	Gbps float64 `json:"gbps"`
	// What arrived, over the whole run (warm-up included): whole
	// segments with the receiver told it is one large TCP segment
	// (RX_LRO: the GSO metadata came through), whole segments without
	// it (a 64 KiB plain frame), frames of at most one MSS (the backend
	// segmented), anything else.
	WholeGSO   uint64 `json:"whole_gso"`
	WholePlain uint64 `json:"whole_plain"`
	Segmented  uint64 `json:"segmented"`
	Other      uint64 `json:"other_size"`
	// Verified frames (a sample), those whose TCP checksum was still
	// partial and those complete, and failures (FirstBad: the first).
	Verified uint64 `json:"verified"`
	Partial  uint64 `json:"csum_partial"`
	// PartialNoLen: partial, but with the pseudo-header sum recomputed
	// without the length (CsumPartialNoLen).
	PartialNoLen uint64 `json:"csum_partial_nolen"`
	Full         uint64 `json:"csum_full"`
	Bad          uint64 `json:"bad"`
	FirstBad     string `json:"first_bad,omitempty"`
	// Driver counters at the end: A's transmit errors, B's misses.
	TxErrors uint64 `json:"tx_errors"`
	RxMissed uint64 `json:"rx_missed"`
	// Memcpy (-memcpy): one core copying 64 KiB buffers.
	Memcpy
}

// Memcpy is one core's copy bandwidth on 64 KiB buffers, in Gbps: Hot over
// one pair of buffers (in cache), Ring from 8 source buffers into 256 (the
// shape of the TSO run: the generator's 8 frames into a 256-entry receive
// ring's worth of buffers, 16 MiB), Pool from 8 into 1023 (the receiver's
// whole pool, 64 MiB, as large as the buffers the run can cycle through).
// Each is the faster of two routines, whose Ring figures are given too:
// Go's copy, and bulkcopy.Copy (REP MOVSB where the CPU has fast string
// moves), the routine vhostd copies large frames with.
type Memcpy struct {
	HotGbps         float64 `json:"memcpy_hot_gbps,omitempty"`
	RingGbps        float64 `json:"memcpy_ring_gbps,omitempty"`
	PoolGbps        float64 `json:"memcpy_pool_gbps,omitempty"`
	RingBuiltinGbps float64 `json:"memcpy_ring_builtin_gbps,omitempty"`
	RingStringGbps  float64 `json:"memcpy_ring_string_gbps,omitempty"`
}

func main() {
	var (
		sockA, sockB, prefix, hugeDir string
		server                        bool
		warmup, window, memcpy        time.Duration
		nTemplates, frameLen, sample  int
		memMB, rxBuf                  int
		out, startFile                string
	)
	flag.StringVar(&sockA, "a", "", "vhost-user socket of port A (sender)")
	flag.StringVar(&sockB, "b", "", "vhost-user socket of port B (receiver)")
	flag.BoolVar(&server, "server", false, "the ports are socket servers (server=1: the backend connects as a client)")
	flag.StringVar(&prefix, "prefix", fmt.Sprintf("tsogen-%d", os.Getpid()), "EAL --file-prefix")
	flag.StringVar(&hugeDir, "huge-dir", "", "run on hugepages of this hugetlbfs mount (default: no hugepages)")
	flag.IntVar(&memMB, "mem", 512, "EAL -m")
	flag.DurationVar(&warmup, "warmup", time.Second, "time before the window")
	flag.DurationVar(&window, "window", 2*time.Second, "measured window")
	flag.IntVar(&nTemplates, "templates", 8, "distinct frames sent round robin")
	flag.IntVar(&frameLen, "frame", SegFrameLen, "frame size in bytes, headers included")
	flag.IntVar(&sample, "sample", 64, "verify one received frame in this many")
	flag.IntVar(&rxBuf, "rx-buf", dpdk.MaxDataRoom-1, "data room of the receive mbufs in bytes, even, 2048 to 65534 (4096: a Linux guest's page-sized buffers)")
	flag.DurationVar(&memcpy, "memcpy", 0, "measure copy bandwidth for this long instead")
	flag.StringVar(&out, "out", "", "write the JSON result to this file (default: stdout)")
	flag.StringVar(&startFile, "start-file", "", "once the links are up, wait for this file to exist before sending (the bench creates it when the backend is ready)")
	flag.Parse()
	var res Result
	var err error
	if memcpy > 0 {
		res.Memcpy = MemcpyGbps(memcpy)
	} else {
		if sockA == "" || sockB == "" {
			fmt.Fprintln(os.Stderr, "tsogen: -a and -b are required")
			os.Exit(2)
		}
		if rxBuf < 2048 || rxBuf > dpdk.MaxDataRoom-1 || rxBuf%2 != 0 {
			fmt.Fprintf(os.Stderr, "tsogen: -rx-buf %d: want an even number of bytes from 2048 to %d\n", rxBuf, dpdk.MaxDataRoom-1)
			os.Exit(2)
		}
		res, err = run(sockA, sockB, server, prefix, hugeDir, startFile, memMB, rxBuf, warmup, window, nTemplates, frameLen, sample)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tsogen:", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(res)
	b = append(b, '\n')
	if out == "" {
		os.Stdout.Write(b)
	} else if err := os.WriteFile(out, b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "tsogen:", err)
		os.Exit(1)
	}
}

// MemcpyGbps measures one core's copy bandwidth on 64 KiB buffers (see
// Memcpy) over about d.
func MemcpyGbps(d time.Duration) Memcpy {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const size = 64 << 10
	const srcs, ring, pool = 8, 256, 1023
	src, dst := make([]byte, srcs*size), make([]byte, pool*size)
	for i := range src {
		src[i] = byte(i)
	}
	builtin := func(d, s []byte) int { return copy(d, s) }
	measure := func(cp func(d, s []byte) int, srcSpan, dstSpan int, d time.Duration) float64 {
		var bytes uint64
		start := time.Now()
		for i := 0; ; i++ {
			s, k := i%srcSpan, i%dstSpan
			cp(dst[k*size:(k+1)*size], src[s*size:(s+1)*size])
			bytes += size
			if i%64 == 63 && time.Since(start) >= d {
				break
			}
		}
		return float64(bytes) * 8 / time.Since(start).Seconds() / 1e9
	}
	measure(builtin, srcs, pool, d/10) // fault the pages in
	var m Memcpy
	for _, cp := range []func(d, s []byte) int{builtin, bulkcopy.Copy} {
		hot := measure(cp, 1, 1, d/6)
		r := measure(cp, srcs, ring, d/6)
		p := measure(cp, srcs, pool, d/6)
		if m.RingBuiltinGbps == 0 {
			m.RingBuiltinGbps = r
		} else {
			m.RingStringGbps = r
		}
		m.HotGbps, m.RingGbps, m.PoolGbps = max(m.HotGbps, hot), max(m.RingGbps, r), max(m.PoolGbps, p)
	}
	return m
}

func run(sockA, sockB string, server bool, prefix, hugeDir, startFile string, memMB, rxBuf int, warmup, window time.Duration, nTemplates, frameLen, sample int) (Result, error) {
	var res Result
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	log.SetOutput(os.Stderr)
	var extra []string
	if hugeDir != "" {
		extra = []string{"--in-memory", "--huge-dir=" + hugeDir, "--single-file-segments"}
	}
	e, err := dpdk.Init(dpdk.EALArgs(extra, dpdk.ArgOptions{Prefix: prefix, Core: -1, MemoryMB: memMB}), logrus.NewEntry(log))
	if err != nil {
		return res, fmt.Errorf("EAL: %w", err)
	}
	defer e.Cleanup()
	srv := ""
	if server {
		srv = ",server=1"
	}
	// Room for a whole 64 KiB segment in two mbufs (the data room is a
	// uint16). Receive buffers are as large unless -rx-buf says
	// otherwise: every backend then fills two descriptors per segment.
	// An even room, so that no mbuf ends at an odd offset of the frame
	// (software checksums over mbuf chains, DPDK's rte_raw_cksum_mbuf,
	// get those wrong).
	const dataRoom = dpdk.MaxDataRoom - 1
	txPool, err := e.NewPktmbufPool(191, 0, dataRoom)
	if err != nil {
		return res, err
	}
	rxPool, err := e.NewPktmbufPool(1023, 32, rxBuf)
	if err != nil {
		return res, err
	}
	var ports [2]*dpdk.Port
	for i, s := range []string{sockA, sockB} {
		dev := fmt.Sprintf("net_virtio_user%d,path=%s,mac=02:00:00:00:00:0%c,mrg_rxbuf=1%s", i, s, "ab"[i], srv)
		p, err := e.Probe(dev)
		if err != nil {
			return res, err
		}
		defer p.Close()
		ports[i] = p
	}
	info, err := ports[0].Info()
	if err != nil {
		return res, err
	}
	infoB, err := ports[1].Info()
	if err != nil {
		return res, err
	}
	res.TxTSO = info.TxOffloads&dpdk.TxOffloadTCPTSO != 0
	res.RxLRO = infoB.RxOffloads&dpdk.RxOffloadTCPLRO != 0
	var why []string
	if !res.TxTSO {
		why = append(why, "port A: no HOST_TSO4/6 (transmit TSO)")
	}
	if !res.RxLRO {
		why = append(why, "port B: no GUEST_TSO4/6 (receive of large segments)")
	}
	if len(why) > 0 {
		res.Refused = "the backend does not offer " + strings.Join(why, "; ")
		return res, nil
	}
	for i, p := range ports {
		pc := dpdk.PortConfig{RxDesc: 256, TxDesc: 256, Pool: rxPool,
			RxOffloads: dpdk.RxOffloadTCPLRO | dpdk.RxOffloadTCPCksum,
			TxOffloads: dpdk.TxOffloadTCPTSO | dpdk.TxOffloadTCPCksum | dpdk.TxOffloadMultiSeg}
		if err := p.Configure(pc); err != nil {
			return res, fmt.Errorf("port %c: %w", "AB"[i], err)
		}
		if err := p.Start(); err != nil {
			return res, fmt.Errorf("port %c: %w", "AB"[i], err)
		}
	}
	flow := DefaultFlow()
	frames := make([][]byte, nTemplates)
	for i := range frames {
		if frames[i], err = BuildSegment(flow, i, frameLen); err != nil {
			return res, err
		}
	}
	meta := dpdk.TxMeta{Flags: dpdk.MbufTxTCPSeg | dpdk.MbufTxTCPCksum | dpdk.MbufTxIPv4, L2: EthLen, L3: IPLen, L4: TCPLen, SegSize: MSS}
	rep, err := ports[0].NewRepeater(txPool, frames, meta)
	if err != nil {
		return res, err
	}
	rxB, rxA := ports[1].NewRxQueue(), ports[0].NewRxQueue()
	// Links come up once the backend has set the rings up.
	if err := waitLinks(ports[:], 20*time.Second); err != nil {
		return res, err
	}
	if startFile != "" {
		if err := waitFile(startFile, 60*time.Second); err != nil {
			return res, err
		}
	}
	// Port B announces its MAC (a broadcast from it) so learning
	// switches deliver to it rather than flood.
	txB := ports[1].NewTxQueue(txPool)
	announce := make([]byte, 60)
	copy(announce, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(announce[6:], flow.DstMAC)
	announce[12], announce[13] = 0x88, 0xb5 // local experimental ethertype
	for i := 0; i < 3; i++ {
		txB.Add([][]byte{announce}, len(announce))
		txB.Flush()
		time.Sleep(50 * time.Millisecond)
	}
	txB.Close()
	res = loop(res, flow, rep, rxA, rxB, nTemplates, frameLen, sample, warmup, window)
	rxA.Close()
	rxB.Close()
	for _, p := range ports {
		p.Stop()
	}
	rep.Close()
	if st, err := ports[0].Stats(); err == nil {
		res.TxErrors = st.TxErrors
	}
	if st, err := ports[1].Stats(); err == nil {
		res.RxMissed = st.RxMissed
	}
	return res, nil
}

func waitFile(path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no start signal (%s) after %v", path, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitLinks(ports []*dpdk.Port, d time.Duration) error {
	deadline := time.Now().Add(d)
	for _, p := range ports {
		for {
			l, err := p.Link()
			if err == nil && l.Up {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("link of %s not up after %v", p.Name(), d)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// counters are the loop's running totals.
type counters struct {
	tx, rx, rxBytes, payload uint64
}

func loop(res Result, flow Flow, rep *dpdk.Repeater, rxA, rxB *dpdk.RxQueue, n, frameLen, sample int, warmup, window time.Duration) Result {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dpdk.RegisterThread()
	segs := make([][]byte, 0, dpdk.MaxSegs)
	flat := make([]byte, 0, frameLen)
	var c, atStart counters
	var tStart time.Time
	start := time.Now()
	warmEnd, end := start.Add(warmup), start.Add(warmup+window)
	var seen uint64
	for iter := 0; ; iter++ {
		if iter&15 == 0 {
			now := time.Now()
			if tStart.IsZero() && now.After(warmEnd) {
				tStart, atStart = now, c
			}
			if now.After(end) {
				res.Window = now.Sub(tStart).Seconds()
				break
			}
			// Port A receives nothing in this one-way test; keep its
			// ring drained all the same.
			rxA.Receive(dpdk.MaxBurst)
			rxA.Release()
		}
		c.tx += uint64(rep.Send(32))
		got := rxB.Receive(dpdk.MaxBurst)
		for i := 0; i < got; i++ {
			var ln int
			var ok bool
			segs, ln, ok = rxB.Frame(i, segs[:0])
			flags, _ := rxB.Offload(i)
			c.rx++
			c.rxBytes += uint64(ln)
			if ln > HdrLen {
				c.payload += uint64(ln - HdrLen)
			}
			switch {
			case ln == frameLen && flags&dpdk.MbufRxLRO != 0:
				res.WholeGSO++
			case ln == frameLen:
				res.WholePlain++
			case ln <= HdrLen+MSS:
				res.Segmented++
			default:
				res.Other++
			}
			seen++
			if seen%uint64(sample) != 1 && sample > 1 {
				continue
			}
			res.Verified++
			if !ok {
				res.bad(fmt.Errorf("frame of %d bytes in more than %d mbufs", ln, dpdk.MaxSegs))
				continue
			}
			flat = flat[:0]
			for _, s := range segs {
				flat = append(flat, s...)
			}
			partialOK := flags&dpdk.MbufRxL4CksumMask == dpdk.MbufRxL4CksumNone
			p, err := Check(flow, flat, n, partialOK)
			switch {
			case err != nil:
				res.bad(fmt.Errorf("frame of %d bytes (ol_flags %#x): %w", ln, flags, err))
			case p.Csum == CsumPartial:
				res.Partial++
			case p.Csum == CsumPartialNoLen:
				res.PartialNoLen++
			default:
				res.Full++
			}
		}
		rxB.Release()
	}
	w := counters{tx: c.tx - atStart.tx, rx: c.rx - atStart.rx, rxBytes: c.rxBytes - atStart.rxBytes, payload: c.payload - atStart.payload}
	res.TxFrames, res.RxFrames, res.RxBytes, res.PayloadBytes = w.tx, w.rx, w.rxBytes, w.payload
	if res.Window > 0 {
		res.Gbps = float64(w.payload) * 8 / res.Window / 1e9
	}
	return res
}

func (r *Result) bad(err error) {
	r.Bad++
	if r.FirstBad == "" {
		r.FirstBad = err.Error()
	}
}
