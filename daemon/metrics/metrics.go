// Package metrics serves vhostd's Prometheus metrics (/metrics) and its
// health check (/healthz). The collector reads, at scrape time, the views
// the control socket answers from (stats, ports, fdb): the switch's atomic
// counters, the vhost-user status and the DPDK uplink's device counters.
// Nothing is counted for it on the data path.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/daemon/config"
	"github.com/vhostd/vhostd/daemon/control"
	vswitch "github.com/vhostd/vhostd/switch"
)

// Source is what the collector reads: the daemon's views, as the control
// socket's stats, ports and fdb commands return them.
type Source interface {
	Stats() []control.PortStats
	Pollers() []control.PollerStats
	Ports() []control.PortInfo
	FDB() []control.FDBEntry
	// FDBCounts returns the FDB's totals and its capacity.
	FDBCounts() (vswitch.FDBCounts, int)
}

// The states a port can be in (control.PortInfo.State), by kind: each
// port gets a vhostd_port_state series for each state of its kind, 1 for
// the one it is in.
var (
	VhostStates  = []string{"listening", "connecting", "connected", "running"}
	UplinkStates = []string{"up", "down", "unknown"}
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("vhostd_"+name, help, labels, nil)
}

var (
	descRxPackets = desc("port_rx_packets_total", "Frames the switch received from the port (the guest or device transmitted).", "port")
	descRxBytes   = desc("port_rx_bytes_total", "Bytes the switch received from the port.", "port")
	descTxPackets = desc("port_tx_packets_total", "Frames the switch delivered to the port.", "port")
	descTxBytes   = desc("port_tx_bytes_total", "Bytes the switch delivered to the port.", "port")
	descDrops     = desc("port_drops_total", "Frames dropped, by reason (the drop names of vhostctl stats).", "port", "reason")
	descMoves     = desc("port_fdb_moves_refused_total", "Received frames whose source address was not learned: pinned to another port (still forwarded).", "port")
	descLimited   = desc("port_fdb_learn_limited_total", "Received frames whose source address was not learned: the port holds its max_macs (still forwarded).", "port")
	descFull      = desc("port_fdb_full_total", "Received frames whose source address was not learned: no room in the FDB (still forwarded).", "port")

	descGSOPassed      = desc("port_gso_passed_total", "GSO super-frames delivered to the port whole (it negotiated the offload).", "port")
	descGSOSegmented   = desc("port_gso_segmented_total", "GSO super-frames segmented in software on their way to the port (it did not negotiate the offload).", "port")
	descGSOSegments    = desc("port_gso_segments_total", "Frames vhostd_port_gso_segmented_total were cut into.", "port")
	descCsumCompleted  = desc("port_csum_completed_total", "Partial checksums completed in software on their way to the port.", "port")
	descInternalErrors = desc("port_internal_errors_total", "Bugs of vhostd's that the port's frames (path=data) or its frontend's requests (path=control) reached; each dropped the port's connection, and the log has the stack.", "port", "path")
	descGSOChanged     = desc("port_gso_changed_total", "GSO super-frames the sender changed after the switch validated them, delivered to the port without their GSO request.", "port")

	descConnected   = desc("port_connected", "1 while a vhost-user frontend is connected to the port, else 0.", "port")
	descState       = desc("port_state", "The port's state, as vhostctl ports shows it: 1 for the state it is in, 0 for the others.", "port", "state")
	descRings       = desc("port_rings_running", "Rings of the port's vhost-user frontend that the data path runs.", "port")
	descLearned     = desc("port_learned_macs", "Addresses the port made the switch learn (pinned addresses not counted).", "port")
	descMaxMACs     = desc("port_max_macs", "Addresses the port may make the switch learn.", "port")
	descFDBEntries  = desc("fdb_entries", "Entries in the forwarding database, pinned ones included.")
	descPortEntries = desc("port_fdb_entries", "Entries in the forwarding database that point to the port, pinned ones included.", "port")

	descUpRxPackets = desc("uplink_rx_packets_total", "Frames the DPDK uplink device received (its own counter).", "port")
	descUpTxPackets = desc("uplink_tx_packets_total", "Frames the DPDK uplink device transmitted (its own counter).", "port")
	descUpRxBytes   = desc("uplink_rx_bytes_total", "Bytes the DPDK uplink device received (its own counter).", "port")
	descUpTxBytes   = desc("uplink_tx_bytes_total", "Bytes the DPDK uplink device transmitted (its own counter).", "port")
	descUpRxMissed  = desc("uplink_rx_missed_total", "Frames the DPDK uplink device dropped for want of room in its receive queue.", "port")
	descUpRxErrors  = desc("uplink_rx_errors_total", "Erroneous frames the DPDK uplink device received.", "port")
	descUpTxErrors  = desc("uplink_tx_errors_total", "Frames the DPDK uplink device failed to transmit.", "port")
	descUpRxNoMbuf  = desc("uplink_rx_nombuf_total", "Receive mbuf allocation failures of the DPDK uplink device.", "port")
	descUpLinkUp    = desc("uplink_link_up", "1 while the DPDK uplink's link is up, else 0.", "port")
	descUpStatsErr  = desc("uplink_stats_error", "1 if the DPDK uplink device's counters could not be read at this scrape, else 0.", "port")

	descUpTxCsum           = desc("uplink_tx_csum_offloaded_total", "Partial checksums handed to the DPDK uplink device to complete (TSO frames are in vhostd_port_gso_passed_total).", "port")
	descUpTxTSOSegLimit    = desc("uplink_tx_tso_seg_limit_total", "TSO frames whose mbuf chain would exceed the DPDK uplink device's nb_seg_max or nb_mtu_seg_max, segmented in software instead.", "port")
	descUpRxLRO            = desc("uplink_rx_lro_total", "GSO frames the DPDK uplink device received (RX_LRO), passed on as such.", "port")
	descUpRxCsumPartial    = desc("uplink_rx_csum_partial_total", "Frames the DPDK uplink device received with a partial checksum (L4_CKSUM_NONE).", "port")
	descUpRxCsumGood       = desc("uplink_rx_csum_good_total", "Frames whose checksum the DPDK uplink device verified (DATA_VALID to guests).", "port")
	descUpRxCsumBad        = desc("uplink_rx_csum_bad_total", "Frames the DPDK uplink device found with a bad checksum, passed on without offload metadata.", "port")
	descUpRxOffloadInvalid = desc("uplink_rx_offload_invalid_total", "Frames the DPDK uplink device flagged with an offload whose headers did not parse, passed on without offload metadata.", "port")
	descUpOffload          = desc("uplink_offload", "1 for each offload the DPDK uplink device was configured with, by DPDK's name (dir tx or rx).", "port", "dir", "offload")

	descPollerBusy       = desc("poller_busy_seconds_total", "Time the poller spent in passes of its loop that moved frames (its core's load: rate(busy) / (rate(busy) + rate(idle))).", "poller")
	descPollerIdle       = desc("poller_idle_seconds_total", "Time the poller spent in empty polls, its idle spin and asleep.", "poller")
	descPollerBusyCycles = desc("poller_busy_cycles_total", "TSC cycles of poller_busy_seconds_total (divide by poller_frames_total for the cost per frame).", "poller")
	descPollerFrames     = desc("poller_frames_total", "Frames the poller took from its receivers.", "poller")
	descPollerBursts     = desc("poller_bursts_total", "Passes of the poller's loop that moved frames.", "poller")
	descPollerPorts      = desc("poller_ports", "1 for each port with a receiver on the poller.", "poller", "port")
	descPollerPreempted  = desc("poller_preemptions_total", "Times the kernel took the poller's CPU for another thread (its thread's nonvoluntary context switches); near 0 when the poller has a CPU of its own (poller_cpus).", "poller")
	descPollerCPU        = desc("poller_cpu", "The CPU the poller is pinned to (poller_cpus); -1 if it is not pinned.", "poller")
	descQueuePackets     = desc("queue_packets_total", "Frames per queue of a VM port: dir rx, taken from the guest's transmit queues by receive lane; dir tx, put in the guest's receive queue.", "port", "queue", "dir")
	descQueueBytes       = desc("queue_bytes_total", "Bytes per queue of a VM port (see vhostd_queue_packets_total).", "port", "queue", "dir")
	descQueueDrops       = desc("queue_drops_total", "Drops per queue of a VM port, by reason (port-wide drops are only in vhostd_port_drops_total).", "port", "queue", "dir", "reason")
	descFDBCapacity      = desc("fdb_capacity", "Addresses the forwarding database can hold.")
	descFDBLearned       = desc("fdb_learned_total", "Addresses the forwarding database learned anew.")
	descFDBMoved         = desc("fdb_moved_total", "Learned addresses that moved to another port.")
	descFDBEvicted       = desc("fdb_evicted_total", "Learned addresses evicted to make room for a new one.")
	descConnections      = desc("port_connections_total", "Frontend connections the VM port has had.", "port")
	descNegotiations     = desc("port_negotiations_total", "Feature negotiations (SET_FEATURES) the VM port accepted, over all its connections.", "port")
	descTSCHz            = desc("tsc_hz", "Rate of the TSC the poller times are measured with, in cycles per second (measured against the monotonic clock since start).")
)

// Collector is a prometheus.Collector over a Source.
type Collector struct{ src Source }

// NewCollector returns a collector reading src at each scrape.
func NewCollector(src Source) *Collector { return &Collector{src: src} }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descRxPackets, descRxBytes, descTxPackets, descTxBytes, descDrops, descMoves, descLimited, descFull,
		descGSOPassed, descGSOSegmented, descGSOSegments, descCsumCompleted, descGSOChanged, descInternalErrors,
		descConnected, descState, descRings, descLearned, descMaxMACs, descFDBEntries, descPortEntries,
		descUpRxPackets, descUpTxPackets, descUpRxBytes, descUpTxBytes, descUpRxMissed, descUpRxErrors,
		descUpTxErrors, descUpRxNoMbuf, descUpLinkUp, descUpStatsErr,
		descUpTxCsum, descUpTxTSOSegLimit, descUpRxLRO, descUpRxCsumPartial, descUpRxCsumGood, descUpRxCsumBad, descUpRxOffloadInvalid, descUpOffload,
		descQueuePackets, descQueueBytes, descQueueDrops, descFDBCapacity, descFDBLearned, descFDBMoved, descFDBEvicted,
		descConnections, descNegotiations,
		descPollerBusy, descPollerIdle, descPollerBusyCycles, descPollerFrames, descPollerBursts, descPollerPorts, descTSCHz,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range c.src.Stats() {
		counter(descRxPackets, s.RxPackets, s.Name)
		counter(descRxBytes, s.RxBytes, s.Name)
		counter(descTxPackets, s.TxPackets, s.Name)
		counter(descTxBytes, s.TxBytes, s.Name)
		for _, reason := range vswitch.DropNames {
			counter(descDrops, s.Drops[reason], s.Name, reason)
		}
		for _, q := range s.Queues {
			id := strconv.Itoa(q.Queue)
			counter(descQueuePackets, q.RxPackets+q.TxPackets, s.Name, id, q.Dir)
			counter(descQueueBytes, q.RxBytes+q.TxBytes, s.Name, id, q.Dir)
			for reason, n := range q.Drops {
				if n > 0 {
					counter(descQueueDrops, n, s.Name, id, q.Dir, reason)
				}
			}
		}
		counter(descMoves, s.FDBMovesRefused, s.Name)
		counter(descLimited, s.FDBLearnLimited, s.Name)
		counter(descFull, s.FDBFull, s.Name)
		counter(descGSOPassed, s.GSOPassed, s.Name)
		counter(descGSOSegmented, s.GSOSegmented, s.Name)
		counter(descGSOSegments, s.GSOSegments, s.Name)
		counter(descCsumCompleted, s.CsumCompleted, s.Name)
		counter(descGSOChanged, s.GSOChanged, s.Name)
		counter(descInternalErrors, s.InternalErrors, s.Name, "data")
		if u := s.DPDK; u != nil {
			counter(descUpRxPackets, u.RxPackets, s.Name)
			counter(descUpTxPackets, u.TxPackets, s.Name)
			counter(descUpRxBytes, u.RxBytes, s.Name)
			counter(descUpTxBytes, u.TxBytes, s.Name)
			counter(descUpRxMissed, u.RxMissed, s.Name)
			counter(descUpRxErrors, u.RxErrors, s.Name)
			counter(descUpTxErrors, u.TxErrors, s.Name)
			counter(descUpRxNoMbuf, u.RxNoMbuf, s.Name)
			gauge(descUpStatsErr, boolf(u.Error != ""), s.Name)
		}
	}
	seconds := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	pollers := c.src.Pollers()
	for _, p := range pollers {
		id := strconv.Itoa(p.Poller)
		seconds(descPollerBusy, p.BusySeconds, id)
		seconds(descPollerIdle, p.IdleSeconds, id)
		counter(descPollerBusyCycles, p.BusyCycles, id)
		counter(descPollerFrames, p.Frames, id)
		counter(descPollerBursts, p.Bursts, id)
		counter(descPollerPreempted, p.Preempted, id)
		gauge(descPollerCPU, float64(p.CPU), id)
		for _, port := range p.Ports {
			gauge(descPollerPorts, 1, id, port)
		}
	}
	if len(pollers) > 0 {
		gauge(descTSCHz, pollers[0].TSCHz)
	}
	fdb := c.src.FDB()
	gauge(descFDBEntries, float64(len(fdb)))
	fc, size := c.src.FDBCounts()
	gauge(descFDBCapacity, float64(size))
	counter(descFDBLearned, fc.Learned)
	counter(descFDBMoved, fc.Moved)
	counter(descFDBEvicted, fc.Evicted)
	perPort := map[string]int{}
	for _, e := range fdb {
		perPort[e.Port]++
	}
	for _, p := range c.src.Ports() {
		states := VhostStates
		if u := p.Uplink; u != nil {
			states = UplinkStates
			gauge(descUpLinkUp, boolf(u.LinkUp), p.Name)
			o := u.Offloads
			counter(descUpTxCsum, o.TxCsum, p.Name)
			counter(descUpTxTSOSegLimit, o.TxTSOSegLimit, p.Name)
			counter(descUpRxLRO, o.RxLRO, p.Name)
			counter(descUpRxCsumPartial, o.RxCsumPartial, p.Name)
			counter(descUpRxCsumGood, o.RxCsumGood, p.Name)
			counter(descUpRxCsumBad, o.RxCsumBad, p.Name)
			counter(descUpRxOffloadInvalid, o.RxOffloadInvalid, p.Name)
			for _, name := range u.TxOffloads {
				gauge(descUpOffload, 1, p.Name, "tx", name)
			}
			for _, name := range u.RxOffloads {
				gauge(descUpOffload, 1, p.Name, "rx", name)
			}
		} else {
			gauge(descConnected, boolf(p.Vhost.Connected), p.Name)
			counter(descConnections, uint64(p.Vhost.Connections), p.Name)
			counter(descNegotiations, uint64(p.Vhost.Negotiations), p.Name)
			counter(descInternalErrors, uint64(p.Vhost.InternalErrors), p.Name, "control")
			running := 0
			for _, r := range p.Vhost.Rings {
				if r.Running {
					running++
				}
			}
			gauge(descRings, float64(running), p.Name)
		}
		for _, st := range states {
			gauge(descState, boolf(st == p.State), p.Name, st)
		}
		gauge(descLearned, float64(p.LearnedMACs), p.Name)
		gauge(descMaxMACs, float64(p.MaxMACs), p.Name)
		gauge(descPortEntries, float64(perPort[p.Name]), p.Name)
	}
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// CheckAddr checks a metrics address (see config.CheckMetricsAddr).
func CheckAddr(addr string) error { return config.CheckMetricsAddr(addr) }

// maxScrapes bounds the scrapes served at once; more get 503. A scrape
// takes the daemon's lock briefly and walks the FDB.
const maxScrapes = 4

// Server serves /metrics and /healthz over HTTP.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
	once sync.Once
}

// Listen binds addr and serves src's metrics on it, with the Go runtime's
// and the process's. The listener is bound when Listen returns.
func Listen(addr string, src Source, log *logrus.Entry) (*Server, error) {
	if err := CheckAddr(addr); err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics address %q: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: errorLog{log}, MaxRequestsInFlight: maxScrapes}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	s := &Server{ln: ln, done: make(chan struct{}),
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Error("metrics listener stopped")
		}
	}()
	return s, nil
}

// Addr returns the address the server listens on (the port chosen, for
// port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops serving: the listener is closed at once, scrapes in progress
// get up to two seconds to finish.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err = s.srv.Shutdown(ctx); err != nil {
			err = s.srv.Close()
		}
		<-s.done
	})
	return err
}

type errorLog struct{ log *logrus.Entry }

func (l errorLog) Println(v ...any) { l.log.Warn(append([]any{"metrics: "}, v...)...) }
