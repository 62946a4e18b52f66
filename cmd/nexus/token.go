package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/security/pki"
	"nexus.dev/nexus/security/token"
)

// withTokens runs f with the token store of the cluster whose store a
// server on this machine uses (its socket, or endpoints).
func withTokens(cmd *cobra.Command, opts *globalOptions, endpoints []string, f func(context.Context, *token.Store) error) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
	defer cancel()
	cli, err := storeClient(ctx, opts, endpoints)
	if err != nil {
		return err
	}
	defer cli.Close()
	return f(ctx, token.NewStore(token.StoreConfig{Client: cli}))
}

func newTokenCommand(opts *globalOptions) *cobra.Command {
	var endpoints []string
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage join tokens, which let new machines join the cluster",
		Long: `Manage join tokens. A token is short-lived and good for a limited number of
joins; it is given to a new machine together with the root CA's pin, and the
machine refuses a server whose CA does not match the pin. Tokens are stored
hashed in the cluster's replicated store, so a token made at one server works
at every server: the secret is shown once, at creation.

Run these on a server machine while its nexus server runs: they reach the store
through the server's socket (<data-dir>/store.sock), or --store-endpoints.`,
	}
	cmd.PersistentFlags().StringSliceVar(&endpoints, "store-endpoints", nil, "client URLs of the store (default: the socket of the server on this machine)")
	cmd.AddCommand(newTokenCreateCommand(opts, &endpoints), newTokenListCommand(opts, &endpoints), newTokenRevokeCommand(opts, &endpoints))
	return cmd
}

// tokenCreated is `token create -o json`'s output.
type tokenCreated struct {
	Token   string    `json:"token"`
	CAPin   string    `json:"caPin"`
	ID      string    `json:"id"`
	Role    string    `json:"role"`
	Expires time.Time `json:"expires"`
	Uses    int       `json:"uses"`
}

func newTokenCreateCommand(opts *globalOptions, endpoints *[]string) *cobra.Command {
	var (
		role, output string
		ttl          time.Duration
		uses         int
	)
	cmd := &cobra.Command{
		Use:   "create --role agent|server",
		Short: "Create a join token and print it with the root CA's pin",
		Long: `Create a join token for a machine that will join as an agent (worker node) or
a server (control-plane member), and print it with the SHA-256 pin of the root
CA's public key. Give both to the joining machine. The token is printed only
now; the store keeps its hash.`,
		Example: `  nexus token create --role agent --ttl 1h
  nexus token create --role server --uses 2 -o json

Then, on the joining machine:

  nexus server --join SERVER --token TOKEN --ca-pin PIN --name s2 --store-peer-addr HOST:7380`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("unknown output format %q: use text or json", output)
			}
			r, err := token.ParseRole(role)
			if err != nil {
				return fmt.Errorf("--role: %w", err)
			}
			if err := token.CheckCreate(r, ttl, uses); err != nil {
				return err
			}
			root, err := pkiDir(opts).RootCert()
			if err != nil {
				return err
			}
			var (
				t   token.Token
				rec token.Record
			)
			err = withTokens(cmd, opts, *endpoints, func(ctx context.Context, s *token.Store) (err error) {
				t, rec, err = s.Create(ctx, r, ttl, uses)
				return err
			})
			if err != nil {
				return err
			}
			out := tokenCreated{Token: t.String(), CAPin: pki.Pin(root), ID: rec.ID, Role: string(rec.Role), Expires: rec.Expires, Uses: rec.UsesLeft}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "token:   %s\n", out.Token)
			fmt.Fprintf(w, "ca-pin:  %s\n", out.CAPin)
			fmt.Fprintf(w, "Role %s, valid until %s, %d use(s). Give the token and the pin to the joining machine; the token is not shown again.\n",
				out.Role, out.Expires.Format(time.RFC3339), out.Uses)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "", "what the joining machine becomes: agent or server (required)")
	f.DurationVar(&ttl, "ttl", time.Hour, fmt.Sprintf("how long the token is valid (at most %s)", token.MaxTTL))
	f.IntVar(&uses, "uses", 1, "how many machines may join with it")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// tokenView is a token as `token list` shows it: never the secret or its hash.
type tokenView struct {
	ID       string    `json:"id"`
	Role     string    `json:"role"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	UsesLeft int       `json:"usesLeft"`
	State    string    `json:"state"`
}

func newTokenListCommand(opts *globalOptions, endpoints *[]string) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List join tokens: id, role, expiry and uses left (never the secret)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("unknown output format %q: use text or json", output)
			}
			var recs []token.Record
			err := withTokens(cmd, opts, *endpoints, func(ctx context.Context, s *token.Store) (err error) {
				recs, err = s.List(ctx)
				return err
			})
			if err != nil {
				return err
			}
			now := time.Now()
			views := make([]tokenView, 0, len(recs))
			for _, r := range recs {
				state := "valid"
				switch {
				case r.Expired(now):
					state = "expired"
				case r.UsesLeft <= 0:
					state = "used"
				}
				views = append(views, tokenView{ID: r.ID, Role: string(r.Role), Created: r.Created, Expires: r.Expires, UsesLeft: r.UsesLeft, State: state})
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), views)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tROLE\tEXPIRES\tUSES LEFT\tSTATE")
			for _, v := range views {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", v.ID, v.Role, v.Expires.Format(time.RFC3339), v.UsesLeft, v.State)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func newTokenRevokeCommand(opts *globalOptions, endpoints *[]string) *cobra.Command {
	return &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke a join token so no more machines can join with it",
		Long:    `Delete a join token from the store. ID is the token's id, as nexus token list shows it (the part after nxt1.).`,
		Example: `  nexus token revoke 4f1c2a9b03de`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			err := withTokens(cmd, opts, *endpoints, func(ctx context.Context, s *token.Store) error {
				return s.Revoke(ctx, args[0])
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Revoked token %s\n", args[0])
			return nil
		},
	}
}
