package config

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/BurntSushi/toml"
)

// Marshal writes c as a TOML config file that Load reads back to the same
// Config: global settings first, then one [[port]] table per port.
func Marshal(c Config) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# vhostd configuration (vhostctl dump-config, or vhostd's state file).\n# Start vhostd with it: vhostd --config FILE\n")
	enc := toml.NewEncoder(&b)
	enc.Indent = ""
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return b.Bytes(), nil
}

// WriteState writes c to path atomically: a temporary file in the same
// directory is written, synced and renamed over path, and the directory is
// synced, so path holds either the old configuration or the new one,
// whole, even if the machine loses power.
func WriteState(path string, c Config) (err error) {
	b, err := Marshal(c)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state file %s: create directory: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("state file %s: write %s: %w", path, f.Name(), err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("state file %s: sync %s: %w", path, f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("state file %s: close %s: %w", path, f.Name(), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("state file %s: open directory to sync it: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("state file %s: sync directory: %w", path, err)
	}
	return nil
}
