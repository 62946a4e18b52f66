package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/security/audit"
)

func newAuditCommand(opts *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Check the control plane's tamper-evident audit log",
		Long: `The API server writes every mutating request, every denial, every failed
authentication and every certificate or token it issues to <data-dir>/audit as
JSON lines. Each record carries the SHA-256 of the record before it, so an
edited, deleted or reordered record breaks the chain; nexus audit verify
finds where.`,
	}
	cmd.AddCommand(newAuditVerifyCommand(opts))
	return cmd
}

func newAuditVerifyCommand(opts *globalOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "verify [FILE|DIR]...",
		Short: "Check that audit files form one unbroken hash chain",
		Long: `Check that the given audit files hold one unbroken chain of records and report
the first problem with its file and line: a record edited after it was written,
records or a whole file missing, records out of order or repeated, a rotated
file cut short, or an incomplete last line. Files may be given in any order; a
directory stands for all its audit files. Without arguments the files in
<data-dir>/audit are checked.

On success it prints the number of records and their seq range, the anchor
(the hash the first record continues from: zeros when the chain starts at the
log's very first record, else the hash of a record that was rotated away and
must be trusted) and the head (the last record's hash). A chain can be cut at
its end, or rewritten from some point on, by anyone who can write the files;
keep the head somewhere else and compare it later to detect that.

Exit status 0 when the chain is intact, 1 when a problem is found or a file
cannot be read.`,
		Example: `  nexus audit verify
  nexus audit verify /var/lib/nexus/audit
  nexus audit verify audit-1-52113.log audit-52114-104220.log audit.log
  nexus audit verify -o json ./copied-audit-files`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("unknown output format %q: use text or json", output)
			}
			if len(args) == 0 {
				dir := filepath.Join(opts.dataDir, "audit")
				if _, err := os.Stat(dir); err != nil {
					return fmt.Errorf("no audit log in --data-dir %s (%w): give the audit files or their directory", opts.dataDir, err)
				}
				args = []string{dir}
			}
			var files []string
			for _, a := range args {
				fi, err := os.Stat(a)
				if err != nil {
					return err
				}
				if !fi.IsDir() {
					files = append(files, a)
					continue
				}
				inDir, err := audit.Files(a)
				if err != nil {
					return err
				}
				if len(inDir) == 0 {
					return fmt.Errorf("%s holds no audit files (audit.log, audit-<first>-<last>.log)", a)
				}
				files = append(files, inDir...)
			}
			rep, err := audit.Verify(files...)
			if err != nil {
				return err
			}
			if output == "json" {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			}
			if p := rep.Problem; p != nil {
				return fmt.Errorf("audit chain broken: %s (%s)", p, p.Kind)
			}
			if output == "json" {
				return nil
			}
			w := cmd.OutOrStdout()
			if rep.Records == 0 {
				fmt.Fprintf(w, "ok: no records in %d file(s)\n", len(rep.Files))
				return nil
			}
			fmt.Fprintf(w, "ok: %d records, seq %d..%d, chain intact\n", rep.Records, rep.First, rep.Last)
			if rep.Anchor == audit.ZeroHash {
				fmt.Fprintf(w, "anchor: seq %d is the log's first record\n", rep.First)
			} else {
				fmt.Fprintf(w, "anchor: seq %d continues from %s (earlier records were rotated away or not given; this hash is trusted)\n", rep.First, rep.Anchor)
			}
			fmt.Fprintf(w, "head:   seq %d has hash %s\n", rep.Last, rep.Head)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
