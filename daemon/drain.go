package daemon

import (
	"runtime/debug"
	"time"

	"github.com/sirupsen/logrus"

	vswitch "github.com/vhostd/vhostd/switch"
)

// DrainTimeout bounds how long Stop keeps forwarding what the guests had
// queued in their transmit rings when it was called.
const DrainTimeout = time.Second

// drain keeps the pollers running until every chain the guests had made
// available on their transmit rings when drain was called has been
// forwarded (returned to the guest, its frame delivered), or timeout has
// passed, and logs how many frames were drained and how many were left.
// Chains queued after the call are not waited for: a guest that keeps
// sending cannot hold the shutdown.
//
// The rings are read from this goroutine while a frontend may be leaving
// and its memory being unmapped: a fault there is recovered and counts
// the port as done.
func (d *Daemon) drain(ports []*vswitch.VMPort, timeout time.Duration) (drained, left int) {
	var marks []vswitch.TxMark
	for _, p := range ports {
		marks = p.MarkTx(marks)
	}
	if len(marks) == 0 {
		return 0, 0
	}
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		d.sw.Wake()
		drained, left = progress(marks)
		if left == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Microsecond)
	}
	log := d.log.WithFields(logrus.Fields{"drained": drained, "left": left, "rings": len(marks), "took": time.Since(start).Round(time.Microsecond)})
	if left > 0 {
		log.Warn("shutdown: guest transmit rings not drained within the bound; the frames left are not forwarded")
	} else {
		log.Info("shutdown: drained the guest transmit rings")
	}
	return drained, left
}

// progress sums the marks' progress; a mark whose ring faults counts as
// done with nothing more.
func progress(marks []vswitch.TxMark) (drained, left int) {
	for i := range marks {
		done, l := markProgress(&marks[i])
		drained += done
		left += l
	}
	return drained, left
}

func markProgress(m *vswitch.TxMark) (done, left int) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if recover() != nil {
			done, left = 0, 0
		}
	}()
	done, left, _ = m.Progress()
	return done, left
}
