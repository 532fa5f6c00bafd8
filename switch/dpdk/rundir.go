package dpdk

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// runtimeDirCandidates returns where EAL may put its runtime directory for
// prefix (eal_create_runtime_dir: /var/run/dpdk as root, else
// $XDG_RUNTIME_DIR/dpdk or /tmp/dpdk).
func runtimeDirCandidates(prefix string) []string {
	if os.Geteuid() == 0 {
		return []string{filepath.Join("/var/run/dpdk", prefix)}
	}
	base := os.Getenv("XDG_RUNTIME_DIR")
	if base == "" {
		base = "/tmp"
	}
	return []string{filepath.Join(base, "dpdk", prefix)}
}

// RemoveStaleRuntimeDirs removes the runtime directories that processes
// named by file prefixes PREFIX<pid> left when they were killed before
// they could clean up: those whose pid no longer runs. It returns what it
// removed. Directories of other prefixes, or of live processes, are left
// alone.
func RemoveStaleRuntimeDirs(prefix string) ([]string, error) {
	parent := filepath.Dir(runtimeDirCandidates(prefix + "0")[0])
	ents, err := os.ReadDir(parent)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		pid, err := strconv.Atoi(rest)
		if !ok || err != nil || pid <= 0 || !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", rest)); err == nil || !errors.Is(err, os.ErrNotExist) {
			continue // alive, or cannot tell
		}
		d := filepath.Join(parent, e.Name())
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, d)
	}
	return removed, errors.Join(errs...)
}
