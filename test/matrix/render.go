package matrix

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/vhostd/vhostd/vhost"
)

// acked is a row's acked features for the table: port a's ("-" if none).
func acked(fs []string) string {
	if len(fs) == 0 {
		return "-"
	}
	return strings.Join(fs, ",")
}

func masked(c Combination) string {
	var parts []string
	if len(c.Disable) > 0 {
		parts = append(parts, c.DisableArg())
	}
	if len(c.FrontendOff) > 0 {
		parts = append(parts, "frontend: "+strings.Join(c.FrontendOff, "+"))
	}
	if c.Packed {
		parts = append(parts, "frontend: packed")
	}
	if c.QueuePairs > 1 {
		parts = append(parts, fmt.Sprintf("frontend: %d queue pairs", c.QueuePairs))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

func result(r *Row) string {
	if r.Pass {
		return "pass"
	}
	return "FAIL"
}

// mdEscape keeps a cell on one line and its pipes from splitting it.
func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	return strings.ReplaceAll(s, "|", `\|`)
}

// WriteMarkdown writes rows as a markdown table, failing rows pointing at
// their trace file.
func WriteMarkdown(w io.Writer, rows []Row) error {
	var b strings.Builder
	b.WriteString("| combination | frontend | masked | acked features | acked protocol features | sent | received | vhostd drops | driver violations | result | why |\n")
	b.WriteString("|---|---|---|---|---|---:|---:|---|---|---|---|\n")
	for i := range rows {
		r := &rows[i]
		why := r.Why
		if r.Trace != "" {
			why += fmt.Sprintf(" (trace: [%s](%s))", r.Trace, r.Trace)
		}
		drops := FormatDrops(r.Drops)
		if len(r.EarlyDrops) > 0 {
			drops += " (before: " + FormatDrops(r.EarlyDrops) + ")"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d | %d | %s | %s | %s | %s |\n",
			r.Combination.Name, r.Frontend, mdEscape(masked(r.Combination)), acked(r.Features), acked(r.ProtocolFeatures),
			r.Sent, r.Received, drops, FormatDrops(r.Violations), result(r), mdEscape(why))
	}
	pass := 0
	for i := range rows {
		if rows[i].Pass {
			pass++
		}
	}
	fmt.Fprintf(&b, "\n%d rows: %d pass, %d fail.\n", len(rows), pass, len(rows)-pass)
	_, err := io.WriteString(w, b.String())
	return err
}

// CSVHeader is the first line of the CSV.
var CSVHeader = []string{"combination", "frontend", "disable", "frontend_off", "features", "protocol_features",
	"sent", "received", "vhostd_rx", "vhostd_tx", "sent_bytes", "received_bytes", "vhostd_rx_bytes", "vhostd_tx_bytes", "drops", "early_drops", "result", "why", "trace", "seconds", "violations", "queue_pairs", "queue_frames"}

// WriteCSV writes rows as CSV with CSVHeader; lists inside a field are
// joined with "+" (features) or spaces (drops and violations,
// reason=count).
func WriteCSV(w io.Writer, rows []Row) error {
	cw := csv.NewWriter(w)
	cw.Write(CSVHeader)
	for i := range rows {
		r := &rows[i]
		drops, early := FormatDrops(r.Drops), FormatDrops(r.EarlyDrops)
		if drops == "-" {
			drops = ""
		}
		if early == "-" {
			early = ""
		}
		viol := FormatDrops(r.Violations)
		if viol == "-" {
			viol = ""
		}
		queues := FormatDrops(r.QueueFrames)
		if queues == "-" {
			queues = ""
		}
		cw.Write([]string{
			r.Combination.Name, string(r.Frontend), r.Combination.DisableArg(), strings.Join(r.Combination.FrontendOff, "+"),
			strings.Join(r.Features, "+"), strings.Join(r.ProtocolFeatures, "+"),
			strconv.FormatUint(r.Sent, 10), strconv.FormatUint(r.Received, 10),
			strconv.FormatUint(r.VhostRx, 10), strconv.FormatUint(r.VhostTx, 10),
			strconv.FormatUint(r.SentBytes, 10), strconv.FormatUint(r.ReceivedBytes, 10),
			strconv.FormatUint(r.VhostRxBytes, 10), strconv.FormatUint(r.VhostTxBytes, 10),
			drops, early, strings.ToLower(result(r)), r.Why, r.Trace, fmt.Sprintf("%.1f", r.Elapsed.Seconds()), viol,
			strconv.Itoa(r.Combination.Queues()), queues,
		})
	}
	cw.Flush()
	return cw.Error()
}

// FormatEvent is one trace event as a line: time, port, kind, request,
// flags, decoded fields, fds, error (as vhostctl trace prints it).
func FormatEvent(e vhost.TraceEvent) string {
	var b strings.Builder
	b.WriteString(e.String())
	if e.Lost != 0 {
		fmt.Fprintf(&b, " (%d events lost before this one)", e.Lost)
	}
	return b.String()
}

// WriteTrace writes events one a line.
func WriteTrace(w io.Writer, events []vhost.TraceEvent) error {
	var b strings.Builder
	for _, e := range events {
		b.WriteString(FormatEvent(e))
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}
