package main

import (
	"encoding/json"
	"os"

	"nexus.dev/nexus/internal/testrootfs"
	"nexus.dev/nexus/runtime"
)

func main() {
	dir := os.Args[1]
	os.MkdirAll(dir+"/rootfs", 0o755)
	if err := testrootfs.Build(dir + "/rootfs"); err != nil {
		panic(err)
	}
	s := runtime.DefaultSpec()
	s.Process.Args = os.Args[2:]
	b, _ := json.MarshalIndent(s, "", " ")
	os.WriteFile(dir+"/config.json", b, 0o644)
}
