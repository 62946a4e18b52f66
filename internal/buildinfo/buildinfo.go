// Package buildinfo reports what binary is running: the release version
// (set at link time), the VCS commit and the Go toolchain.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version and Commit are set by `make build` with -ldflags -X. Commit falls
// back to the VCS stamp Go embeds when the build had VCS information.
var (
	Version = "dev"
	Commit  = ""
)

// Info describes the running binary.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Modified  bool   `json:"modified"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Read collects Info from the linker-set version and the embedded build info.
func Read() Info {
	info := Info{Version: Version, Commit: "unknown", GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if Commit != "" {
		info.Commit = Commit
	} else if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Commit = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	return info
}

func (i Info) String() string {
	commit := i.Commit
	if i.Modified {
		commit += " (modified)"
	}
	return fmt.Sprintf("nexus %s\ncommit: %s\ngo: %s\nplatform: %s\n", i.Version, commit, i.GoVersion, i.Platform)
}
