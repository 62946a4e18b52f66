// Command mkbundle turns a directory holding the config.json written by
// `nexus runtime spec` into a bundle every runtime in a bench/ comparison
// accepts: it writes the busybox root filesystem the runtime's own tests use
// (testrootfs.Build, no network) and edits the process and the few fields a
// peer rejects, printing each edit so the script's output says what changed.
//
// Usage: go run ./bench/mkbundle [-ociversion V] DIR ARG...
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"nexus.dev/nexus/internal/testrootfs"
)

func main() {
	// crun 1.8.1 accepts only 1.0.x ("unknown version specified" otherwise);
	// runc 1.1.5 speaks 1.0.2. Nothing the bench uses is newer than 1.0.
	ociVersion := flag.String("ociversion", "1.0.2", "ociVersion to write (empty keeps the generated one)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: mkbundle [-ociversion V] DIR ARG...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() < 2 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Arg(0), flag.Args()[1:], *ociVersion); err != nil {
		fmt.Fprintf(os.Stderr, "mkbundle: %v\n", err)
		os.Exit(1)
	}
}

func run(dir string, args []string, ociVersion string) error {
	path := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read the spec (write it first with `nexus runtime spec --bundle %s`): %w", dir, err)
	}
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	proc, ok := spec["process"].(map[string]any)
	if !ok {
		return fmt.Errorf("%s has no process object", path)
	}
	root, ok := spec["root"].(map[string]any)
	if !ok {
		return fmt.Errorf("%s has no root object", path)
	}
	rootPath, _ := root["path"].(string)
	if rootPath == "" {
		rootPath = "rootfs"
	}
	if !filepath.IsAbs(rootPath) {
		rootPath = filepath.Join(dir, rootPath)
	}
	if err := os.MkdirAll(rootPath, 0o755); err != nil {
		return fmt.Errorf("create rootfs: %w", err)
	}
	if err := testrootfs.Build(rootPath); err != nil {
		return err
	}

	edit := func(what string, old, new any) {
		fmt.Printf("  spec edit: %s: %v -> %v\n", what, jsonText(old), jsonText(new))
	}
	edit("process.args", proc["args"], args)
	proc["args"] = args
	if proc["terminal"] != false {
		edit("process.terminal", proc["terminal"], false)
		proc["terminal"] = false
	}
	if ociVersion != "" && spec["ociVersion"] != ociVersion {
		edit("ociVersion", spec["ociVersion"], ociVersion)
		spec["ociVersion"] = ociVersion
	}
	out, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func jsonText(v any) string {
	if v == nil {
		return "(unset)"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
