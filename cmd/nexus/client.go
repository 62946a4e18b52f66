package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/client/printers"
	"nexus.dev/nexus/api/types"
)

// clientOptions are the flags of the commands that talk to the API.
type clientOptions struct {
	config    string
	context   string
	namespace string
	http3     bool
	cmd       *cobra.Command
}

// session is a connected client with what it was made from.
type session struct {
	c        *client.Client
	path     string
	resolved *client.Resolved
	// namespace is -n, or the context's; explicitNS says -n was given.
	namespace  string
	explicitNS bool
}

// bind adds --config, --context, -n/--namespace and --http3 to cmd and
// its subcommands.
func (o *clientOptions) bind(cmd *cobra.Command) {
	o.cmd = cmd
	f := cmd.PersistentFlags()
	f.StringVar(&o.config, "config", "", "client config file (default $"+client.ConfigEnv+", else ~/.nexus/config)")
	f.StringVar(&o.context, "context", "", "context of the config to use (default: its currentContext)")
	f.StringVarP(&o.namespace, "namespace", "n", "", "namespace (default: the context's, else \"default\")")
	f.BoolVar(&o.http3, "http3", false, "talk to the server over HTTP/3 (QUIC) instead of HTTP/2 (default: the cluster's http3 setting)")
	_ = cmd.RegisterFlagCompletionFunc("context", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		cfg, _, err := o.loadConfig()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for _, x := range cfg.Contexts {
			names = append(names, x.Name)
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})
	_ = cmd.RegisterFlagCompletionFunc("namespace", func(_ *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
		ns, _ := types.LookupResource("namespaces")
		return o.completeNames(ns, prefix, nil), cobra.ShellCompDirectiveNoFileComp
	})
}

// configSource says where the config path came from, for messages.
func (o *clientOptions) configSource() string {
	switch {
	case o.config != "":
		return "--config"
	case os.Getenv(client.ConfigEnv) != "":
		return "$" + client.ConfigEnv
	}
	return "the default path"
}

func (o *clientOptions) loadConfig() (*client.Config, string, error) {
	path, err := client.ConfigPath(o.config)
	if err != nil {
		return nil, "", fmt.Errorf("%w: give the config file with --config or $%s", err, client.ConfigEnv)
	}
	cfg, err := client.LoadConfig(path)
	if client.IsNotExist(err) {
		return nil, path, fmt.Errorf("no client config at %s (from %s): `nexus server` writes an admin config to <data-dir>/admin.conf, and to ~/.nexus/config when there is none; give one with --config or $%s", path, o.configSource(), client.ConfigEnv)
	}
	if errors.Is(err, os.ErrPermission) {
		return nil, path, fmt.Errorf("%w: run as the user the config belongs to, or give another with --config", err)
	}
	if err != nil {
		return nil, path, readable(err)
	}
	return cfg, path, nil
}

// connect loads the config, resolves the context and makes a client.
func (o *clientOptions) connect() (*session, error) {
	cfg, path, err := o.loadConfig()
	if err != nil {
		return nil, err
	}
	r, err := cfg.Resolve(o.context)
	if errors.Is(err, client.ErrNoContext) {
		return nil, fmt.Errorf("%w: choose one with --context NAME, or make one current with `nexus config use-context NAME`", err)
	}
	if err != nil {
		return nil, err
	}
	s := r.Settings
	if o.cmd.PersistentFlags().Changed("http3") {
		s.HTTP3 = o.http3
	}
	s.Logger = slog.Default()
	c, err := client.New(s)
	if err != nil {
		return nil, fmt.Errorf("context %q of %s: %w", r.Context.Name, path, err)
	}
	ss := &session{c: c, path: path, resolved: r, namespace: r.Namespace()}
	if o.cmd.PersistentFlags().Changed("namespace") {
		if msg := types.ValidateName(o.namespace); msg != "" {
			c.Close()
			return nil, fmt.Errorf("--namespace %q: %s", o.namespace, msg)
		}
		ss.namespace, ss.explicitNS = o.namespace, true
	}
	return ss, nil
}

// explain words a client error for a person at a terminal: the server's
// problem, every field that is wrong, and what to check or do next.
func (s *session) explain(err error) error {
	if err == nil {
		return nil
	}
	var ce *client.ConnectionError
	if errors.As(err, &ce) {
		if ce.UntrustedServer() {
			return fmt.Errorf("%w\nCheck that context %q in %s has the cluster's CA certificate and this server's address", err, s.resolved.Context.Name, s.path)
		}
		h3 := ""
		if ce.Proto == "HTTP/3" {
			h3 = "; HTTP/3 needs UDP to reach the server: try without --http3 (or http3: false in the cluster's entry)"
		}
		return fmt.Errorf("%w\nIs the Nexus server running there? Check the context (now %q: --context, `nexus config get-contexts`) and the config file (now %s: --config, $%s)%s",
			err, s.resolved.Context.Name, s.path, client.ConfigEnv, h3)
	}
	var ae *client.APIError
	if !errors.As(err, &ae) {
		return readable(err)
	}
	msg := readable(err).Error()
	switch ae.Reason {
	case client.ReasonUnauthorized:
		msg += fmt.Sprintf("\nThe server did not accept user %q of context %q: its certificate may have expired, been revoked or come from another cluster; ask an administrator for a new one (nexus user add)", s.resolved.User.Name, s.resolved.Context.Name)
	case client.ReasonTooManyRequests:
		msg += "\nThe server limits how fast one identity may call it: try again in a moment"
	case client.ReasonUnavailable:
		if ae.Kind != "Node" { // a node that is away says so itself
			msg += "\nThe server cannot reach its store or write its audit log: try again, and check the server's log"
		}
	}
	return errors.New(msg)
}

// readable lists the fields of an error that names several, one per line,
// instead of on one long line.
func readable(err error) error {
	var (
		ae *client.APIError
		de *types.DecodeError
		ce *client.ConfigError
	)
	var head string
	var fields types.FieldErrors
	switch {
	case errors.As(err, &ae) && len(ae.Fields) > 1:
		head, _, _ = strings.Cut(ae.Error(), ": ")
		if ae.Reason == client.ReasonInvalid {
			head = fmt.Sprintf("%s %q is invalid", ae.Kind, ae.Name)
		}
		fields = ae.Fields
	case errors.As(err, &de) && len(de.Fields) > 1:
		head, fields = de.Msg, de.Fields
	case errors.As(err, &ce) && len(ce.Fields) > 1:
		head, fields = "client config "+ce.Path, ce.Fields
	default:
		return err
	}
	msg := head + ":"
	for _, f := range fields {
		msg += "\n  * " + f.Error()
	}
	return errors.New(msg)
}

// resources reads a KIND argument: one kind, or several separated by
// commas, by plural, singular, short name or kind name.
func resources(arg string) ([]*types.Resource, error) {
	var out []*types.Resource
	for _, name := range strings.Split(arg, ",") {
		r, ok := types.LookupResource(strings.TrimSpace(name))
		if !ok {
			return nil, fmt.Errorf("unknown resource type %q: use one of %s", name, kindList())
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// kindArg requires a KIND argument; usage says how the command is used.
func kindArg(usage string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) == 0 {
			return fmt.Errorf("name the kind of objects, e.g. %s (kinds: %s)", usage, kindList())
		}
		return nil
	}
}

// oneResource reads a KIND argument that must name one kind.
func oneResource(arg, verb string) (*types.Resource, error) {
	rs, err := resources(arg)
	if err != nil {
		return nil, err
	}
	if len(rs) != 1 {
		return nil, fmt.Errorf("%s one kind at a time, not %s", verb, arg)
	}
	return rs[0], nil
}

// kindList names every resource with its short names, for messages.
func kindList() string {
	var s []string
	for _, r := range types.AllResources() {
		n := r.Plural
		if len(r.ShortNames) > 0 {
			n += " (" + strings.Join(r.ShortNames, ", ") + ")"
		}
		s = append(s, n)
	}
	return strings.Join(s, ", ")
}

// kindsHelp is the list of kinds for help texts.
func kindsHelp() string {
	var b strings.Builder
	for _, r := range types.AllResources() {
		fmt.Fprintf(&b, "  %-22s %s\n", r.Plural, strings.Join(append([]string{r.Singular}, r.ShortNames...), ", "))
	}
	return b.String()
}

// nsFor is where to look for r: "" for cluster-scoped resources and, with
// all, for every namespace.
func (s *session) nsFor(r *types.Resource, all bool) string {
	if !r.Namespaced || all {
		return ""
	}
	return s.namespace
}

// where says where a list of r looked, for the messages that say it found
// nothing: "in namespace shop" or "in the cluster".
func (s *session) where(r *types.Resource, all bool) string {
	if s.nsFor(r, all) == "" {
		return "in the cluster"
	}
	return "in namespace " + s.namespace
}

// completeKindsAndNames completes a KIND argument, then object names of
// that kind from the server.
func (o *clientOptions) completeKindsAndNames(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	if len(args) == 0 {
		done, last := "", prefix
		if i := strings.LastIndexByte(prefix, ','); i >= 0 {
			done, last = prefix[:i+1], prefix[i+1:]
		}
		var out []string
		for _, r := range types.AllResources() {
			for _, n := range append([]string{r.Plural, r.Singular}, r.ShortNames...) {
				if strings.HasPrefix(n, last) {
					out = append(out, done+n)
				}
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
	rs, err := resources(args[0])
	if err != nil || len(rs) != 1 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return o.completeNames(rs[0], prefix, args[1:]), cobra.ShellCompDirectiveNoFileComp
}

// completeFirst completes the first argument with the names of the
// resource named plural, and nothing after it.
func (o *clientOptions) completeFirst(plural string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return o.completeNames(mustLookup(plural), prefix, nil), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeNames lists names of r from the server that start with prefix
// and are not in given; nothing when the server cannot be asked.
func (o *clientOptions) completeNames(r *types.Resource, prefix string, given []string) []string {
	s, err := o.connect()
	if err != nil {
		return nil
	}
	defer s.c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	objs, _, err := s.c.List(ctx, r, s.nsFor(r, false), client.ListOptions{})
	if err != nil {
		return nil
	}
	var out []string
	for _, obj := range objs {
		n := obj.GetObjectMeta().Name
		if strings.HasPrefix(n, prefix) && !slices.Contains(given, n) {
			out = append(out, n)
		}
	}
	return out
}

// completeFormats completes -o.
func completeFormats(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	var out []string
	for _, f := range printers.Formats {
		out = append(out, string(f))
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
