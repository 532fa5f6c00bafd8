// Package binaries builds this module's commands for end-to-end tests, so
// that they run the real programs a user runs, built from this tree.
package binaries

import (
	"fmt"
	"os"
	"os/exec"

	"github.com/vhostd/vhostd/test/guestimage"
)

// Build builds the commands (package paths relative to the module root,
// such as "./daemon/cmd/vhostd") with the race detector into a fresh
// temporary directory, which it returns; the caller removes it. The go
// tool's output goes to stderr.
func Build(cmds ...string) (dir string, err error) { return BuildTags("", cmds...) }

// BuildTags is Build with the build tags tags (comma-separated; "" for
// none).
func BuildTags(tags string, cmds ...string) (dir string, err error) {
	root, err := guestimage.ModuleRoot()
	if err != nil {
		return "", err
	}
	dir, err = os.MkdirTemp("", "vhostd-test-bin")
	if err != nil {
		return "", err
	}
	args := []string{"build", "-race", "-o", dir + "/"}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.Command("go", append(args, cmds...)...)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("build %v: %w", cmds, err)
	}
	return dir, nil
}
