package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"nexus.dev/nexus/security/identity"
	"nexus.dev/nexus/security/pki"
	"nexus.dev/nexus/store/embed"
	"nexus.dev/nexus/store/raftnode"
	"nexus.dev/nexus/store/server"
)

type storeOptions struct {
	name                string
	listenClientURLs    []string
	advertiseClientURLs []string
	listenPeerURL       string
	advertisePeerURL    string
	initialCluster      string
	initialClusterState string
	peerCertFile        string
	peerKeyFile         string
	peerTrustedCAFile   string
	tick                time.Duration
	snapshotCount       uint64
	quotaBytes          int64
	listenMetricsURLs   []string
	enablePprof         bool
	clientTLS           clientTLS
}

func newStoreCommand(g *globalOptions) *cobra.Command {
	o := &storeOptions{}
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Run a member of the etcd-compatible replicated store",
		Long: `Run one member of Nexus's replicated key-value store. It speaks the etcd v3 API,
so etcdctl and every etcd client work against it unchanged; members replicate with
raft over QUIC with mutual TLS. Flags follow etcd's names.

Peers authenticate with server certificates of one cluster CA. Like etcd with no
flags, a new single-member store needs no setup: when its data dir holds neither
store data nor PKI and no certificate flags are given, it creates a cluster CA
(cluster "store") and its own certificate in <data-dir>/pki at first start, and
logs how to add members. To make the certificates yourself instead:

  nexus --data-dir /var/lib/nexus cert init --cluster prod --name m0
  nexus --data-dir /var/lib/nexus cert issue --server m1 --out m1-certs
  nexus --data-dir /var/lib/nexus cert issue --server m2 --out m2-certs

m0 uses <data-dir>/pki/node.crt, node.key and bundle.pem (the defaults); give the
others --peer-cert-file, --peer-key-file and --peer-trusted-ca-file from their
directory (NAME.crt, NAME.key, ca.pem).

Certificates live 24 hours. A member whose data dir holds the CA (m0 above)
renews its own at half-life; the others reload their files within 30 seconds
of a change, so renew theirs on the CA machine (nexus cert issue --server NAME
--out DIR, e.g. from a timer twice a day) and copy the files over: no restart.

Example (three members on one machine):

  nexus --data-dir /tmp/m0 store --name m0 \
    --listen-client-urls http://127.0.0.1:2379 --listen-peer-urls quic://[::1]:2380 \
    --initial-cluster m0=quic://[::1]:2380,m1=quic://[::1]:2381,m2=quic://[::1]:2382

Adding a member later: announce it (etcd's clients only take http(s) URLs, so give its QUIC
peer port as https, with its name before the @), then start it with the current members:

  etcdctl member add m3 --learner --peer-urls https://m3@[::1]:2383
  nexus --data-dir /tmp/m3 store --name m3 --initial-cluster-state existing \
    --listen-client-urls http://127.0.0.1:2382 --listen-peer-urls quic://[::1]:2383 \
    --initial-cluster m0=quic://[::1]:2380,m1=quic://[::1]:2381,m2=quic://[::1]:2382,m3=quic://[::1]:2383 \
    --peer-cert-file m3.crt --peer-key-file m3.key --peer-trusted-ca-file ca.pem
  etcdctl member promote <ID printed by member add>

Removing a member (etcdctl member remove <ID>): once it applies its own removal
it exits with an error, as etcd's does; remove its store data (DATA_DIR/store)
before adding it again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStore(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "default", "this member's name (also the name in its server certificate)")
	f.StringSliceVar(&o.listenClientURLs, "listen-client-urls", []string{"http://127.0.0.1:2379"}, "URLs to serve the etcd API on (http://host:port, or https:// with --cert-file and --key-file)")
	f.StringSliceVar(&o.advertiseClientURLs, "advertise-client-urls", nil, "client URLs to advertise (default: the listen URLs)")
	f.StringVar(&o.listenPeerURL, "listen-peer-urls", "quic://[::1]:2380", "URL to serve raft peers on (quic://host:port, UDP)")
	f.StringVar(&o.advertisePeerURL, "initial-advertise-peer-urls", "", "this member's peer URL as others reach it (default: its entry in --initial-cluster)")
	f.StringVar(&o.initialCluster, "initial-cluster", "", "every member of a new cluster: name=quic://host:port,... (default: this member alone)")
	f.StringVar(&o.initialClusterState, "initial-cluster-state", "new", "new, or existing to join a cluster that already added this member (member add)")
	f.StringVar(&o.peerCertFile, "peer-cert-file", "", "server certificate for peer traffic (default <data-dir>/pki/node.crt)")
	f.StringVar(&o.peerKeyFile, "peer-key-file", "", "its key (default <data-dir>/pki/node.key)")
	f.StringVar(&o.peerTrustedCAFile, "peer-trusted-ca-file", "", "the cluster's trust bundle (default <data-dir>/pki/bundle.pem)")
	f.DurationVar(&o.tick, "heartbeat-interval", 100*time.Millisecond, "raft tick (election timeout is 10 ticks)")
	f.Uint64Var(&o.snapshotCount, "snapshot-count", 10000, "applied entries between snapshots")
	f.Int64Var(&o.quotaBytes, "quota-backend-bytes", 0, "size the database file may reach before the NOSPACE alarm stops writes, as etcd's (0: 2 GiB; negative: no limit)")
	f.StringSliceVar(&o.listenMetricsURLs, "listen-metrics-urls", nil, "extra http(s)://host:port URLs serving /health (and /debug/pprof with --enable-pprof)")
	f.StringVar(&o.clientTLS.certFile, "cert-file", "", "server certificate for https client and metrics URLs (PEM; must name the host clients dial)")
	f.StringVar(&o.clientTLS.keyFile, "key-file", "", "its key (PEM)")
	f.StringVar(&o.clientTLS.caFile, "trusted-ca-file", "", "CA bundle that client certificates are verified against (PEM)")
	f.BoolVar(&o.clientTLS.clientCertAuth, "client-cert-auth", false, "require a client certificate signed by --trusted-ca-file on https URLs")
	f.BoolVar(&o.enablePprof, "enable-pprof", false, "serve Go runtime profiles under /debug/pprof/ on the metrics URLs")
	return cmd
}

// zeroSetupCluster is the cluster (SPIFFE trust domain) of the CA a new
// single-member store creates for itself.
const zeroSetupCluster = "store"

// bootstrapStorePKI gives a new single-member store without a PKI a
// cluster CA of its own, so that `nexus store` with no flags runs as etcd
// does. Only such a store: with certificate flags, other members, joining
// or store data already there, missing certificates stay an error.
func bootstrapStorePKI(g *globalOptions, o *storeOptions, peers []raftnode.Peer, join bool, log *slog.Logger) error {
	if o.peerCertFile != "" || o.peerKeyFile != "" || o.peerTrustedCAFile != "" || join || len(peers) != 1 || peers[0].Name != o.name {
		return nil
	}
	storeDir := filepath.Join(g.dataDir, "store")
	if entries, err := os.ReadDir(storeDir); err == nil && len(entries) > 0 {
		return nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("look for store data: %w", err)
	}
	d := pkiDir(g)
	created, err := d.Bootstrap(pki.InitConfig{Cluster: zeroSetupCluster, ServerName: o.name})
	switch {
	case errors.Is(err, pki.ErrIncomplete):
		return fmt.Errorf("%w: restore the missing files, or move %s away and nexus store creates a new CA for a new single-member store", err, d.Path)
	case err != nil:
		return fmt.Errorf("create a CA for this store: %w (check --name and --data-dir)", err)
	case !created:
		return nil
	}
	root, err := d.RootCert()
	if err != nil {
		return err
	}
	peerURL := o.advertisePeerURL
	if peerURL == "" {
		peerURL = o.listenPeerURL
	}
	log.Info("no PKI in the data directory: created a cluster CA and this member's peer certificate",
		"pki", d.Path, "member", identity.Server(zeroSetupCluster, o.name), "root pin", pki.Pin(root))
	log.Info("to add a member NAME later: issue its certificate from this CA, announce it, start it, promote it",
		"issue", fmt.Sprintf("nexus --data-dir %s cert issue --server NAME --out NAME-certs", g.dataDir),
		"announce", "etcdctl member add NAME --learner --peer-urls https://NAME@HOST:PORT",
		"start", fmt.Sprintf("nexus --data-dir DIR store --name NAME --initial-cluster-state existing --initial-cluster %s=%s,NAME=quic://HOST:PORT "+
			"--listen-peer-urls quic://HOST:PORT --peer-cert-file NAME-certs/NAME.crt --peer-key-file NAME-certs/NAME.key --peer-trusted-ca-file NAME-certs/ca.pem", o.name, peerURL),
		"promote", "etcdctl member promote ID",
		"note", "members on other machines must reach this member's peer URL "+peerURL+"; see nexus store --help")
	return nil
}

// parseMembers reads name=url,name=url.
func parseMembers(s string) ([]raftnode.Peer, error) {
	var peers []raftnode.Peer
	for _, part := range strings.Split(s, ",") {
		name, u, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("--initial-cluster entry %q is not name=quic://host:port", part)
		}
		addr, err := hostPort(u)
		if err != nil {
			return nil, fmt.Errorf("--initial-cluster entry %q: %w", part, err)
		}
		peers = append(peers, raftnode.Peer{ID: server.MemberID(name), Name: name, Addr: addr})
	}
	return peers, nil
}

func hostPort(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%q is not a URL like quic://host:port", raw)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return "", fmt.Errorf("%q needs a port", raw)
	}
	return u.Host, nil
}

// peerFiles are the member's certificate, key and trust bundle files: the
// flags, or <data-dir>/pki's.
func peerFiles(g *globalOptions, o *storeOptions) (certFile, keyFile, caFile string) {
	dir := filepath.Join(g.dataDir, "pki")
	pick := func(flag, def string) string {
		if flag != "" {
			return flag
		}
		return filepath.Join(dir, def)
	}
	return pick(o.peerCertFile, pki.NodeCertFile), pick(o.peerKeyFile, pki.NodeKeyFile), pick(o.peerTrustedCAFile, pki.BundleFile)
}

func loadPeerCredentials(g *globalOptions, o *storeOptions) (*pki.Credentials, error) {
	certFile, keyFile, caFile := peerFiles(g, o)
	chain, key, bundle, err := readPeerFiles(certFile, keyFile, caFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (create them with `nexus cert init` or `nexus cert issue --server %s`)", err, o.name)
	}
	if err != nil {
		return nil, err
	}
	return pki.NewCredentials(pki.CredentialsConfig{Chain: chain, Key: key, Bundle: bundle})
}

// readPeerFiles reads and parses a member's certificate chain, key and trust
// bundle; errors name the file.
func readPeerFiles(certFile, keyFile, caFile string) ([]*x509.Certificate, *ecdsa.PrivateKey, *pki.Bundle, error) {
	chain, err := pki.ReadCertificatesFile(certFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("peer certificate: %w", err)
	}
	key, err := pki.ReadKeyFile(keyFile, nil)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("peer key %s: %w", keyFile, err)
	}
	bundle, err := pki.ReadBundleFile(caFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("peer trust bundle: %w", err)
	}
	return chain, key, bundle, nil
}

func runStore(ctx context.Context, g *globalOptions, o *storeOptions) error {
	log := slog.Default().With("store", o.name)
	grpcTLS, err := o.clientTLS.config("h2")
	if err != nil {
		return err
	}
	httpTLS, err := o.clientTLS.config("http/1.1")
	if err != nil {
		return err
	}
	listenPeer, err := hostPort(o.listenPeerURL)
	if err != nil {
		return fmt.Errorf("--listen-peer-urls: %w", err)
	}
	var peers []raftnode.Peer
	if o.initialCluster == "" {
		adv := o.advertisePeerURL
		if adv == "" {
			adv = o.listenPeerURL
		}
		a, err := hostPort(adv)
		if err != nil {
			return fmt.Errorf("--initial-advertise-peer-urls: %w", err)
		}
		peers = []raftnode.Peer{{ID: server.MemberID(o.name), Name: o.name, Addr: a}}
	} else if peers, err = parseMembers(o.initialCluster); err != nil {
		return err
	}
	var join bool
	switch o.initialClusterState {
	case "new":
	case "existing":
		join = true
	default:
		return fmt.Errorf("--initial-cluster-state %q: use new or existing", o.initialClusterState)
	}
	if err := bootstrapStorePKI(g, o, peers, join, log); err != nil {
		return err
	}
	creds, err := loadPeerCredentials(g, o)
	if err != nil {
		return err
	}
	certFile, keyFile, caFile := peerFiles(g, o)
	id := creds.Identity()
	switch {
	case id.Kind == identity.KindServer && id.Name != o.name:
		return fmt.Errorf("the peer certificate %s is for server %q, not %q: start this member with --name %s, or issue a certificate for %s with `nexus cert issue --server %s`",
			certFile, id.Name, o.name, id.Name, o.name, o.name)
	case id.Kind != identity.KindServer:
		return fmt.Errorf("the peer certificate %s is for %s, not a server: issue one with `nexus cert issue --server %s`", certFile, id, o.name)
	}
	keeper, err := peerKeeper(g, creds, certFile, keyFile, caFile, log)
	if err != nil {
		return err
	}
	kctx, stopKeeper := context.WithCancel(ctx)
	defer stopKeeper()
	go keeper.Run(kctx)
	advertise := o.advertiseClientURLs
	if len(advertise) == 0 {
		advertise = o.listenClientURLs
	}
	// Bind every HTTP port before the store starts: a bad URL or a port in
	// use then fails the command with nothing started.
	for flag, urls := range map[string][]string{"--listen-client-urls": o.listenClientURLs, "--listen-metrics-urls": o.listenMetricsURLs} {
		for _, u := range urls {
			if strings.HasPrefix(u, "https://") && grpcTLS == nil {
				return fmt.Errorf("%s %q: https needs --cert-file and --key-file (the member's certificate for clients)", flag, u)
			}
		}
	}
	clientLs, err := embed.ListenClientURLs(o.listenClientURLs, grpcTLS)
	if err != nil {
		return fmt.Errorf("--listen-client-urls %w", err)
	}
	metricsLs, err := embed.ListenClientURLs(o.listenMetricsURLs, httpTLS)
	if err != nil {
		embed.CloseAll(clientLs)
		return fmt.Errorf("--listen-metrics-urls %w", err)
	}
	m, err := embed.Start(ctx, embed.Config{Name: o.name, DataDir: filepath.Join(g.dataDir, "store"), Credentials: creds,
		ListenPeer: listenPeer, Peers: peers, Join: join, ClientListeners: clientLs, ClientURLs: advertise,
		MetricsListeners: metricsLs, EnablePprof: o.enablePprof, TickInterval: o.tick, SnapshotEvery: o.snapshotCount,
		QuotaBytes: o.quotaBytes, Logger: log})
	if err != nil {
		return err
	}
	defer m.Stop()
	log.Info("store member ready to serve client requests", "clients", strings.Join(advertise, ","), "peers", listenPeer, "cluster", id.Cluster)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case s := <-sig:
		log.Info("stopping", "signal", s.String())
	case <-ctx.Done():
	case <-m.Done():
		// Answer what is in flight first (the removal this member was
		// asked to make of itself, say), for a moment at most.
		m.Stop()
		err := m.Err()
		if errors.Is(err, raftnode.ErrRemoved) {
			return fmt.Errorf("store member %s was removed from the cluster and stopped; to add it again, remove its store data %s, run etcdctl member add, and start it with --initial-cluster-state existing", o.name, filepath.Join(g.dataDir, "store"))
		}
		if err != nil {
			return fmt.Errorf("store member %s stopped: %w", o.name, err)
		}
	}
	return nil
}

// peerKeeper keeps the member's certificate current: renewed at half-life
// from the local CA when the data dir holds it and the files are its
// node.crt/node.key; otherwise reloaded within 30 s of a change (a
// certificate issued on the CA machine and copied over).
func peerKeeper(g *globalOptions, creds *pki.Credentials, certFile, keyFile, caFile string, log *slog.Logger) (*pki.Keeper, error) {
	d := pkiDir(g)
	cfg := pki.KeeperConfig{Credentials: creds, CertFile: certFile, KeyFile: keyFile, BundleFile: caFile, Logger: log,
		Warning: "issue a new one on the CA machine (nexus cert issue --server NAME --out DIR) and copy it over these files; the member picks it up without a restart"}
	if certFile == filepath.Join(d.Path, pki.NodeCertFile) && keyFile == filepath.Join(d.Path, pki.NodeKeyFile) {
		if _, err := os.Stat(filepath.Join(d.Path, pki.IntermediateKeyFile)); err == nil {
			id := creds.Identity()
			cfg.Issue = func(_ context.Context, csr []byte) ([]*x509.Certificate, error) {
				issuer, err := d.Issuer(pki.DefaultLeafTTL)
				if err != nil {
					return nil, err
				}
				return issuer.Sign(csr, id, pki.DefaultLeafTTL)
			}
			cfg.RevocationsFile = filepath.Join(d.Path, pki.RevocationsFile)
		}
	}
	return pki.NewKeeper(cfg)
}
