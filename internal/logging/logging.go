// Package logging builds the process-wide slog logger from the command-line
// flags, so every command logs in the same format and at the same level.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Config selects the level and the output format of the logger.
type Config struct {
	Level  string // debug, info, warn or error
	Format string // text or json
}

// ParseLevel turns a level name into a slog.Level.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q: use debug, info, warn or error", s)
}

// New returns a logger writing to w as the config asks.
func New(w io.Writer, c Config) (*slog.Logger, error) {
	level, err := ParseLevel(c.Level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(c.Format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("unknown log format %q: use text or json", c.Format)
}
