// Package guestimage builds the vhostd test guest (kernel and initramfs) for
// tests and demos, with test/guest/build.sh.
package guestimage

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// ModuleRoot returns the directory holding go.mod, found by walking up from
// the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("module root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// DefaultDir returns the directory tests build the guest into:
// <module root>/build/guest.
func DefaultDir() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "build", "guest"), nil
}

// Build makes sure dir holds an up-to-date guest image, building it if needed
// (downloading Debian packages on first use), and returns the paths of the
// kernel and the initramfs. It is safe to call from several processes at once.
func Build(dir string) (kernel, initrd string, err error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", "", fmt.Errorf("build guest image: %w", err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return "", "", fmt.Errorf("build guest image: %w", err)
	}
	script := filepath.Join(root, "test", "guest", "build.sh")
	out, err := exec.Command("bash", script, dir).CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("build guest image: %s: %w\n%s", script, err, out)
	}
	return filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.gz"), nil
}

// ForTest builds the test guest (once, cached under build/guest) and
// returns its kernel and initrd, failing t if it cannot.
func ForTest(t testing.TB) (kernel, initrd string) {
	t.Helper()
	dir, err := DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	kernel, initrd, err = Build(dir)
	if err != nil {
		t.Fatalf("build guest image: %v", err)
	}
	return kernel, initrd
}
