//go:build linux

package qemu

import (
	"context"
	"fmt"
	"time"
)

// Live migration between two QEMU processes on one machine: the
// destination runs the same command line with -incoming (and, for a
// vhost-user NIC, a socket of its own), the source is told to migrate
// over QMP.

// StartIncoming starts QEMU for cfg waiting for a migration stream on uri
// (for example "unix:/tmp/mig.sock"): the guest runs only once a source
// has migrated into it, and Run works from then on, on this QEMU's
// console. cfg must describe the same machine as the source's, NICs
// included (their sockets may differ); cfg.QMPSocket is needed to
// migrate onwards.
func StartIncoming(cfg GuestConfig, uri string) (*Guest, error) {
	g, err := launch(cfg, "-incoming", uri)
	if err != nil {
		return nil, fmt.Errorf("start incoming guest: %w", err)
	}
	return g, nil
}

// MigrationInfo is what query-migrate reports (the fields the tests use).
type MigrationInfo struct {
	Status    string `json:"status"`
	TotalTime int64  `json:"total-time"` // ms
	Downtime  int64  `json:"downtime"`   // ms
	SetupTime int64  `json:"setup-time"` // ms
	ErrorDesc string `json:"error-desc"` // why it failed
	RAM       struct {
		Transferred int64 `json:"transferred"`
		Total       int64 `json:"total"`
		Iterations  int64 `json:"dirty-sync-count"`
	} `json:"ram"`
}

// Migrate migrates the guest whose QMP connection is q to uri and waits
// until the migration ends, polling query-migrate every poll. It returns
// the last report, and an error unless the migration completed.
func Migrate(ctx context.Context, q *QMP, uri string, poll time.Duration) (MigrationInfo, error) {
	var info MigrationInfo
	if err := q.Execute(ctx, "migrate", map[string]string{"uri": uri}, nil); err != nil {
		return info, err
	}
	for {
		if err := q.Execute(ctx, "query-migrate", nil, &info); err != nil {
			return info, err
		}
		switch info.Status {
		case "completed":
			// Asked once more, the report carries the final figures.
			if err := q.Execute(ctx, "query-migrate", nil, &info); err != nil {
				return info, err
			}
			return info, nil
		case "failed", "cancelled":
			return info, fmt.Errorf("migration %s: %s", info.Status, info.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return info, fmt.Errorf("migration still %s: %w", info.Status, ctx.Err())
		case <-time.After(poll):
		}
	}
}
