package client

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/security/pki"
)

// The client config file: kubeconfig-like, in YAML (or JSON).
const (
	ConfigAPIVersion = "v1"
	ConfigKind       = "Config"
	// ConfigEnv names the config file when no path is given.
	ConfigEnv = "NEXUS_CONFIG"
	// MaxConfigSize bounds a config file: a context with its certificates
	// is a few KiB, so this is room for hundreds, and a path named by
	// mistake (/dev/zero, a disk image) is refused instead of read.
	MaxConfigSize = 1 << 20
	// maxCredentialFileSize bounds the files a config points at
	// (certificates, keys, tokens).
	maxCredentialFileSize = pki.MaxCertificateFileSize
)

// Config is the client config file: clusters (servers and the CA that
// signs them), users (certificates or tokens), and contexts pairing one
// of each with a default namespace.
type Config struct {
	APIVersion     string    `json:"apiVersion"`
	Kind           string    `json:"kind"`
	CurrentContext string    `json:"currentContext,omitempty"`
	Clusters       []Cluster `json:"clusters"`
	Users          []User    `json:"users"`
	Contexts       []Context `json:"contexts"`

	path string // the file it was read from, for errors and relative paths
}

// Cluster is an API server and the CA its certificate chains to.
type Cluster struct {
	Name string `json:"name"`
	// Server is https://host:port.
	Server string `json:"server"`
	// CertificateAuthorityData is the cluster's CA certificate(s), PEM; the
	// only roots the client trusts for this server.
	CertificateAuthorityData PEM `json:"certificateAuthorityData,omitempty"`
	// CertificateAuthorityFile is a PEM file instead (relative to the config).
	CertificateAuthorityFile string `json:"certificateAuthorityFile,omitempty"`
	// HTTP3 talks to the server over HTTP/3 (QUIC) instead of HTTP/2.
	HTTP3 bool `json:"http3,omitempty"`
}

// User is who the client is: a client certificate and key from the
// cluster PKI, or a service account token.
type User struct {
	Name                  string `json:"name"`
	ClientCertificateData PEM    `json:"clientCertificateData,omitempty"`
	ClientCertificateFile string `json:"clientCertificateFile,omitempty"`
	ClientKeyData         PEM    `json:"clientKeyData,omitempty"`
	ClientKeyFile         string `json:"clientKeyFile,omitempty"`
	Token                 string `json:"token,omitempty"`
	TokenFile             string `json:"tokenFile,omitempty"`
}

// Context pairs a cluster and a user, with the namespace commands use when
// none is given.
type Context struct {
	Name      string `json:"name"`
	Cluster   string `json:"cluster"`
	User      string `json:"user"`
	Namespace string `json:"namespace,omitempty"`
}

// PEM is PEM text. In the file it is base64, as kubeconfig writes it;
// plain PEM text is read too, for hand-written files.
type PEM []byte

// MarshalJSON writes p as base64 (and the placeholders of a Redacted
// config as they are).
func (p PEM) MarshalJSON() ([]byte, error) {
	if s := string(p); s == omitted || s == redacted {
		return json.Marshal(s)
	}
	return json.Marshal(base64.StdEncoding.EncodeToString(p))
}

// UnmarshalJSON reads base64 or plain PEM text.
func (p *PEM) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New("must be a string: PEM text, or PEM in base64")
	}
	if strings.HasPrefix(strings.TrimSpace(s), "-----BEGIN ") {
		*p = PEM(s)
		return nil
	}
	d, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		return fmt.Errorf("must be PEM text, or PEM in base64: %v", err)
	}
	*p = d
	return nil
}

// Config errors; test with errors.Is.
var (
	// ErrInsecureConfigMode: the file holds a key or token and group or
	// others may read it. Such a key must be treated as leaked, as ssh does.
	ErrInsecureConfigMode = errors.New("holds a private key or token and is readable by group or others")
	// ErrNoContext: no context was named and the config has no current one.
	ErrNoContext = errors.New("no context chosen")
)

// ConfigError is a config file that cannot be used, naming the file and,
// in Fields, every field that is wrong.
type ConfigError struct {
	Path   string
	Fields types.FieldErrors
	Err    error
}

func (e *ConfigError) Error() string {
	name := e.Path
	if name == "" {
		name = "(not saved)"
	}
	if len(e.Fields) > 0 {
		return fmt.Sprintf("client config %s: %s", name, e.Fields.Error())
	}
	return fmt.Sprintf("client config %s: %v", name, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// ConfigPath is the config file to use: flag when set, else $NEXUS_CONFIG,
// else DefaultConfigPath.
func ConfigPath(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if p := os.Getenv(ConfigEnv); p != "" {
		return p, nil
	}
	p, err := DefaultConfigPath()
	if err != nil {
		return "", fmt.Errorf("no client config path: $%s is not set and %w", ConfigEnv, err)
	}
	return p, nil
}

// DefaultConfigPath is ~/.nexus/config.
func DefaultConfigPath() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("the home directory is unknown: %w", err)
	}
	return filepath.Join(home, ".nexus", "config"), nil
}

// LoadConfig reads and checks the config file at path. A missing file is
// an error wrapping fs.ErrNotExist; a file that holds a key or token and
// that group or others may read is refused (ErrInsecureConfigMode).
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &ConfigError{Path: path, Err: err}
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, &ConfigError{Path: path, Err: err}
	}
	if !st.Mode().IsRegular() {
		return nil, &ConfigError{Path: path, Err: errors.New("not a regular file")}
	}
	data, err := fsutil.ReadLimit(f, path, MaxConfigSize)
	if err != nil {
		return nil, &ConfigError{Path: path, Err: err}
	}
	c, err := ParseConfig(data)
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.Path = path
			return nil, ce
		}
		return nil, &ConfigError{Path: path, Err: err}
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 && c.holdsSecrets() {
		return nil, &ConfigError{Path: path, Err: fmt.Errorf("%w (mode %04o): run chmod 600 %s, and replace the key if others may have copied it", ErrInsecureConfigMode, perm, path)}
	}
	c.path = path
	return c, nil
}

// ParseConfig decodes and checks a config document. Unknown fields and
// every broken rule are errors naming the field.
func ParseConfig(data []byte) (*Config, error) {
	var c Config
	if err := types.DecodeStrict(data, &c); err != nil {
		var de *types.DecodeError
		if errors.As(err, &de) && len(de.Fields) > 0 {
			return nil, &ConfigError{Fields: de.Fields, Err: err}
		}
		return nil, &ConfigError{Err: err}
	}
	if errs := c.validate(); len(errs) > 0 {
		return nil, &ConfigError{Fields: errs, Err: errs}
	}
	return &c, nil
}

// Path is the file the config was read from or last written to.
func (c *Config) Path() string { return c.path }

func (c *Config) holdsSecrets() bool {
	for _, u := range c.Users {
		if len(u.ClientKeyData) > 0 || u.Token != "" {
			return true
		}
	}
	return false
}

// Write saves the config at path with mode 0600, atomically (a reader sees
// the old or the new file), creating its directory (0700) if needed.
func (c *Config) Write(path string) error {
	return c.write(path, false)
}

// WriteNew saves the config at path as Write does, but only if no file is
// there: otherwise it leaves that file alone and returns an error wrapping
// fs.ErrExist. (`nexus server` writes ~/.nexus/config this way.)
func (c *Config) WriteNew(path string) error {
	return c.write(path, true)
}

func (c *Config) write(path string, exclusive bool) error {
	if errs := c.validate(); len(errs) > 0 {
		return &ConfigError{Path: path, Fields: errs, Err: errs}
	}
	data, err := yaml.Marshal(c)
	if err != nil {
		return &ConfigError{Path: path, Err: err}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return &ConfigError{Path: path, Err: err}
	}
	if exclusive {
		err = createNew(path, data)
	} else {
		err = pki.WriteFileAtomic(path, data, 0o600)
	}
	if err != nil {
		return &ConfigError{Path: path, Err: err}
	}
	c.path = path
	return nil
}

// createNew writes a complete temporary file and links it at path, which
// fails if path exists: the file appears whole or not at all, and a file
// someone else made meanwhile is never replaced.
func createNew(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".new-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(f.Name(), path)
	}
	if err == nil {
		_ = fsutil.SyncDir(filepath.Dir(path)) // the link is made; a failed sync only weakens crash safety
	}
	return err
}

type fieldErrors struct{ types.FieldErrors }

func (e *fieldErrors) add(field, format string, args ...any) {
	e.FieldErrors = append(e.FieldErrors, types.FieldError{Field: field, Detail: fmt.Sprintf(format, args...)})
}

func (c *Config) validate() types.FieldErrors {
	var errs fieldErrors
	if c.APIVersion != ConfigAPIVersion {
		errs.add("apiVersion", "must be %q, not %q", ConfigAPIVersion, c.APIVersion)
	}
	if c.Kind != ConfigKind {
		errs.add("kind", "must be %q, not %q", ConfigKind, c.Kind)
	}
	clusters, users := map[string]bool{}, map[string]bool{}
	for i, cl := range c.Clusters {
		p := fmt.Sprintf("clusters[%d]", i)
		checkName(&errs, p, cl.Name, clusters)
		checkServer(&errs, p+".server", cl.Server)
		switch {
		case len(cl.CertificateAuthorityData) > 0 && cl.CertificateAuthorityFile != "":
			errs.add(p, "set certificateAuthorityData or certificateAuthorityFile, not both")
		case len(cl.CertificateAuthorityData) > 0:
			if _, err := certPool(cl.CertificateAuthorityData); err != nil {
				errs.add(p+".certificateAuthorityData", "%v", err)
			}
		case cl.CertificateAuthorityFile == "":
			errs.add(p+".certificateAuthorityData", "missing: the cluster's CA certificate is the only one the client trusts for this server")
		}
	}
	for i, u := range c.Users {
		p := fmt.Sprintf("users[%d]", i)
		checkName(&errs, p, u.Name, users)
		hasCert := len(u.ClientCertificateData) > 0 || u.ClientCertificateFile != ""
		hasKey := len(u.ClientKeyData) > 0 || u.ClientKeyFile != ""
		hasToken := u.Token != "" || u.TokenFile != ""
		switch {
		case len(u.ClientCertificateData) > 0 && u.ClientCertificateFile != "":
			errs.add(p, "set clientCertificateData or clientCertificateFile, not both")
		case len(u.ClientKeyData) > 0 && u.ClientKeyFile != "":
			errs.add(p, "set clientKeyData or clientKeyFile, not both")
		case u.Token != "" && u.TokenFile != "":
			errs.add(p, "set token or tokenFile, not both")
		case hasCert && !hasKey:
			errs.add(p+".clientKeyData", "missing: a client certificate needs its key")
		case hasKey && !hasCert:
			errs.add(p+".clientCertificateData", "missing: a client key needs its certificate")
		case !hasCert && !hasToken:
			errs.add(p, "has no credentials: set clientCertificateData and clientKeyData, or token")
		case len(u.ClientCertificateData) > 0 && len(u.ClientKeyData) > 0:
			if _, err := tls.X509KeyPair(u.ClientCertificateData, u.ClientKeyData); err != nil {
				errs.add(p+".clientKeyData", "does not go with clientCertificateData: %v", err)
			}
		}
		if strings.ContainsAny(u.Token, " \t\r\n") {
			errs.add(p+".token", "must not contain spaces or line breaks")
		}
	}
	contexts := map[string]bool{}
	for i, x := range c.Contexts {
		p := fmt.Sprintf("contexts[%d]", i)
		checkName(&errs, p, x.Name, contexts)
		if !clusters[x.Cluster] {
			errs.add(p+".cluster", "%q is not a cluster of this config (clusters: %s)", x.Cluster, names(c.Clusters, func(c Cluster) string { return c.Name }))
		}
		if !users[x.User] {
			errs.add(p+".user", "%q is not a user of this config (users: %s)", x.User, names(c.Users, func(u User) string { return u.Name }))
		}
		if x.Namespace != "" {
			if msg := types.ValidateName(x.Namespace); msg != "" {
				errs.add(p+".namespace", "%s", msg)
			}
		}
	}
	if c.CurrentContext != "" && !contexts[c.CurrentContext] {
		errs.add("currentContext", "%q is not a context of this config (contexts: %s)", c.CurrentContext, c.ContextNames())
	}
	return errs.FieldErrors
}

func checkName(errs *fieldErrors, p, name string, seen map[string]bool) {
	switch {
	case name == "":
		errs.add(p+".name", "must not be empty")
	case seen[name]:
		errs.add(p+".name", "%q is used twice", name)
	}
	seen[name] = true
}

func checkServer(errs *fieldErrors, p, server string) {
	const example = "e.g. https://10.0.0.1:7443"
	u, err := url.Parse(server)
	switch {
	case server == "":
		errs.add(p, "missing: the API server's URL, %s", example)
	case err != nil:
		errs.add(p, "not a URL (%v): %s", err, example)
	case u.Scheme != "https":
		errs.add(p, "%q must be an https:// URL (the API speaks only TLS), %s", server, example)
	case u.Host == "" || u.Hostname() == "":
		errs.add(p, "%q names no host, %s", server, example)
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		errs.add(p, "%q must be only scheme, host and port, %s", server, example)
	}
}

func names[T any](list []T, name func(T) string) string {
	if len(list) == 0 {
		return "none"
	}
	s := make([]string, len(list))
	for i, e := range list {
		s[i] = name(e)
	}
	return strings.Join(s, ", ")
}

// ContextNames lists the contexts, for messages.
func (c *Config) ContextNames() string {
	return names(c.Contexts, func(x Context) string { return x.Name })
}

func certPool(pemData []byte) (*x509.CertPool, error) {
	certs, err := pki.ParseCertificates(pemData)
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, errors.New("holds no certificate")
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// Context returns the named context, or an error listing the ones there are.
func (c *Config) Context(name string) (*Context, error) {
	for i := range c.Contexts {
		if c.Contexts[i].Name == name {
			return &c.Contexts[i], nil
		}
	}
	return nil, &ConfigError{Path: c.path, Err: fmt.Errorf("no context %q (contexts: %s)", name, c.ContextNames())}
}

// SetCurrentContext makes name the current context; Write saves it.
func (c *Config) SetCurrentContext(name string) error {
	if _, err := c.Context(name); err != nil {
		return err
	}
	c.CurrentContext = name
	return nil
}

// Resolved is a context with what it refers to read: the settings a
// Client needs, and the context's namespace.
type Resolved struct {
	Context  Context
	Cluster  Cluster
	User     User
	Settings Settings
}

// Namespace is the context's namespace, or "default".
func (r *Resolved) Namespace() string {
	if r.Context.Namespace != "" {
		return r.Context.Namespace
	}
	return types.DefaultNamespace
}

// Resolve reads the named context (the current one when name is empty)
// and the files it refers to (relative to the config's directory), and
// returns the settings to connect with.
func (c *Config) Resolve(name string) (*Resolved, error) {
	if name == "" {
		name = c.CurrentContext
	}
	if name == "" {
		return nil, &ConfigError{Path: c.path, Err: fmt.Errorf("%w: currentContext is not set (contexts: %s)", ErrNoContext, c.ContextNames())}
	}
	x, err := c.Context(name)
	if err != nil {
		return nil, err
	}
	r := &Resolved{Context: *x}
	for _, cl := range c.Clusters {
		if cl.Name == x.Cluster {
			r.Cluster = cl
		}
	}
	for _, u := range c.Users {
		if u.Name == x.User {
			r.User = u
		}
	}
	fail := func(field string, err error) (*Resolved, error) {
		return nil, &ConfigError{Path: c.path, Err: fmt.Errorf("context %q: %s: %w", name, field, err)}
	}
	caPEM := []byte(r.Cluster.CertificateAuthorityData)
	if f := r.Cluster.CertificateAuthorityFile; f != "" {
		if caPEM, err = fsutil.ReadFileLimit(c.rel(f), maxCredentialFileSize); err != nil {
			return fail("cluster "+r.Cluster.Name+" certificateAuthorityFile", err)
		}
	}
	if r.Settings.RootCAs, err = certPool(caPEM); err != nil {
		return fail("cluster "+r.Cluster.Name+" certificate authority", err)
	}
	r.Settings.Server = r.Cluster.Server
	r.Settings.HTTP3 = r.Cluster.HTTP3
	u := r.User
	certPEM, keyPEM := []byte(u.ClientCertificateData), []byte(u.ClientKeyData)
	if u.ClientCertificateFile != "" {
		if certPEM, err = fsutil.ReadFileLimit(c.rel(u.ClientCertificateFile), maxCredentialFileSize); err != nil {
			return fail("user "+u.Name+" clientCertificateFile", err)
		}
	}
	if u.ClientKeyFile != "" {
		if keyPEM, err = pki.ReadPrivateFile(c.rel(u.ClientKeyFile), maxCredentialFileSize); err != nil {
			return fail("user "+u.Name+" clientKeyFile", err)
		}
	}
	if len(certPEM) > 0 {
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return fail("user "+u.Name+" client certificate and key", err)
		}
		r.Settings.Certificate = &cert
	}
	r.Settings.Token = u.Token
	if u.TokenFile != "" {
		tok, err := pki.ReadPrivateFile(c.rel(u.TokenFile), maxCredentialFileSize)
		if err != nil {
			return fail("user "+u.Name+" tokenFile", err)
		}
		r.Settings.Token = string(bytes.TrimSpace(tok))
	}
	return r, nil
}

// rel resolves a path in the config relative to the config's directory.
func (c *Config) rel(p string) string {
	if filepath.IsAbs(p) || c.path == "" {
		return p
	}
	return filepath.Join(filepath.Dir(c.path), p)
}

// ContextEntry is one context with its cluster and user, as NewConfig and
// AddContext take it: what `nexus server` writes for its admin and what a
// new user is given.
type ContextEntry struct {
	// Name names the context; the cluster and user get the same name
	// unless Cluster or User say otherwise.
	Name, Cluster, User string
	Server              string
	CA                  []byte // PEM
	Certificate, Key    []byte // PEM, or
	Token               string
	Namespace           string
	HTTP3               bool
}

// NewConfig is a config holding one context, which is current.
func NewConfig(e ContextEntry) (*Config, error) {
	c := &Config{APIVersion: ConfigAPIVersion, Kind: ConfigKind}
	if err := c.AddContext(e); err != nil {
		return nil, err
	}
	c.CurrentContext = e.Name
	return c, nil
}

// AddContext adds a context with its cluster and user, replacing those of
// the same names.
func (c *Config) AddContext(e ContextEntry) error {
	if e.Cluster == "" {
		e.Cluster = e.Name
	}
	if e.User == "" {
		e.User = e.Name
	}
	put(&c.Clusters, Cluster{Name: e.Cluster, Server: e.Server, CertificateAuthorityData: e.CA, HTTP3: e.HTTP3}, func(x Cluster) string { return x.Name })
	put(&c.Users, User{Name: e.User, ClientCertificateData: e.Certificate, ClientKeyData: e.Key, Token: e.Token}, func(x User) string { return x.Name })
	put(&c.Contexts, Context{Name: e.Name, Cluster: e.Cluster, User: e.User, Namespace: e.Namespace}, func(x Context) string { return x.Name })
	if errs := c.validate(); len(errs) > 0 {
		return &ConfigError{Path: c.path, Fields: errs, Err: errs}
	}
	return nil
}

func put[T any](list *[]T, v T, name func(T) string) {
	for i := range *list {
		if name((*list)[i]) == name(v) {
			(*list)[i] = v
			return
		}
	}
	*list = append(*list, v)
}

// IsNotExist reports whether err is a config file that does not exist.
func IsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// Redacted is a copy of c without key material: certificates become
// "DATA+OMITTED", keys and tokens "REDACTED", as `config view` shows it.
func (c *Config) Redacted() *Config {
	r := *c
	r.Clusters = append([]Cluster(nil), c.Clusters...)
	r.Users = append([]User(nil), c.Users...)
	r.Contexts = append([]Context(nil), c.Contexts...)
	for i := range r.Clusters {
		if len(r.Clusters[i].CertificateAuthorityData) > 0 {
			r.Clusters[i].CertificateAuthorityData = PEM(omitted)
		}
	}
	for i := range r.Users {
		u := &r.Users[i]
		if len(u.ClientCertificateData) > 0 {
			u.ClientCertificateData = PEM(omitted)
		}
		if len(u.ClientKeyData) > 0 {
			u.ClientKeyData = PEM(redacted)
		}
		if u.Token != "" {
			u.Token = redacted
		}
	}
	return &r
}

const (
	omitted  = "DATA+OMITTED"
	redacted = "REDACTED"
)

// Marshal writes c as YAML, the form of the file, or as JSON.
func (c *Config) Marshal(asJSON bool) ([]byte, error) {
	if asJSON {
		js, err := json.MarshalIndent(c, "", "  ")
		return append(js, '\n'), err
	}
	return yaml.Marshal(c)
}

// Minify drops every context but the current one, and the clusters and
// users it does not use.
func (c *Config) Minify() error {
	x, err := c.Context(c.CurrentContext)
	if err != nil {
		return err
	}
	ctx := *x
	c.Contexts = []Context{ctx}
	c.Clusters = slices.DeleteFunc(c.Clusters, func(cl Cluster) bool { return cl.Name != ctx.Cluster })
	c.Users = slices.DeleteFunc(c.Users, func(u User) bool { return u.Name != ctx.User })
	return nil
}
