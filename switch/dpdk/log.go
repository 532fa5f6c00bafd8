//go:build cgo

package dpdk

/*
#include <stddef.h>
*/
import "C"

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
)

// DPDK's log levels (rte_log.h).
const (
	rteLogErr     = 4
	rteLogWarning = 5
	rteLogNotice  = 6
)

// benign are DPDK complaints that say nothing is wrong for vhostd; they are
// logged at debug level with the reason.
var benign = []struct{ substr, why string }{
	// The Go runtime installs handlers for every signal, so net_tap finds
	// no free real-time signal to mark its queues readable; its rx burst
	// then simply reads the queue each time, and vhostd waits on the
	// queue fd itself (the rx interrupt fd).
	{"rt-signals are in use", "the Go runtime owns the signals; net_tap's rx burst reads its queue without a signal's hint"},
	{"No Rx trigger signal available", "the Go runtime owns the signals; net_tap's rx burst reads its queue without a signal's hint"},
	// rte_eth_dev_rx_intr_ctl_q_get_fd on a device without rx interrupts
	// (net_ring, net_null, net_af_packet, net_memif): the uplink asks, and
	// polls when there is no fd.
	{"Rx Intr handle unset", "the device has no rx interrupts: the uplink polls it instead"},
	{"Rx Intr vector unset", "the device has no rx interrupts: the uplink polls it instead"},
	// net_tap's rte_flow support needs the multiq qdisc; vhostd uses no flows.
	{"qdisc", "net_tap's rte_flow support is not used by vhostd"},
	{"Disabling rte flow support", "net_tap's rte_flow support is not used by vhostd"},
	// Multi-process is off (--no-shconf): nothing to register with or
	// tell.
	{"mp action callback", "multi-process support is off (--no-shconf)"},
	{"req to secondary", "multi-process support is off (--no-shconf)"},
}

var (
	logger atomic.Pointer[logrus.Entry]

	// complaints keeps the last DPDK lines at warning level or worse, so a
	// failed call can quote them in its error.
	complaintsMu sync.Mutex
	complaints   [32]complaint
	complaintSeq uint64
	partial      strings.Builder // a line not yet ended by '\n'
	partialLevel int
)

type complaint struct {
	seq  uint64
	line string
}

// setLogger makes DPDK log through log (with field component=dpdk).
func setLogger(log *logrus.Entry) {
	logger.Store(log.WithField("component", "dpdk"))
}

//export vhostdDPDKLog
func vhostdDPDKLog(buf *C.char, n C.size_t, level C.int) {
	text := C.GoStringN(buf, C.int(n))
	complaintsMu.Lock()
	defer complaintsMu.Unlock()
	for text != "" {
		line, rest, ended := strings.Cut(text, "\n")
		text = rest
		if !ended {
			partial.WriteString(line)
			partialLevel = int(level)
			return
		}
		if partial.Len() > 0 {
			line = partial.String() + line
			partial.Reset()
		}
		logLine(strings.TrimSpace(line), int(level))
	}
}

// logLine logs one DPDK line. Called with complaintsMu held.
func logLine(line string, level int) {
	if line == "" {
		return
	}
	log := logger.Load()
	for _, b := range benign {
		if strings.Contains(line, b.substr) {
			if log != nil {
				log.WithField("why_harmless", b.why).Debug(line)
			}
			return
		}
	}
	if level <= rteLogWarning {
		complaintSeq++
		complaints[complaintSeq%uint64(len(complaints))] = complaint{complaintSeq, line}
	}
	if log == nil {
		return
	}
	switch {
	case level <= rteLogErr:
		log.Error(line)
	case level == rteLogWarning:
		log.Warn(line)
	case level == rteLogNotice:
		log.Info(line)
	default:
		log.Debug(line)
	}
}

// noMark makes newError quote no DPDK log lines: for calls that are not
// expected to log (reads of link and stats).
const noMark = ^uint64(0)

// complaintMark returns a mark for complaintsSince.
func complaintMark() uint64 {
	complaintsMu.Lock()
	defer complaintsMu.Unlock()
	return complaintSeq
}

// complaintsSince returns the DPDK lines at warning level or worse logged
// after mark (at most the last 32), without repeats.
func complaintsSince(mark uint64) []string {
	if mark == noMark {
		return nil
	}
	complaintsMu.Lock()
	defer complaintsMu.Unlock()
	var out []string
	seen := map[string]bool{}
	for s := mark + 1; s <= complaintSeq; s++ {
		c := complaints[s%uint64(len(complaints))]
		if c.seq == s && !seen[c.line] {
			seen[c.line] = true
			out = append(out, c.line)
		}
	}
	return out
}
