package main

import (
	"bufio"
	"context"
	"io"
	"regexp"
	"testing"
)

// lineExpecter reads r's lines in the background (a command's output, such
// as get -w) and returns expect, which waits for the next line matching re,
// skipping others, and fails the test when r ends or ctx is done first.
// detail, when set, adds to the failure (the command's stderr).
func lineExpecter(ctx context.Context, t *testing.T, r io.Reader, detail func() string) (expect func(re string) string) {
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	more := func() string {
		if detail == nil {
			return ""
		}
		return "\n" + detail()
	}
	return func(re string) string {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("output ended before a line like %q%s", re, more())
				}
				if regexp.MustCompile(re).MatchString(l) {
					return l
				}
			case <-ctx.Done():
				t.Fatalf("no line like %q in time%s", re, more())
			}
		}
	}
}
