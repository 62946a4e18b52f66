package client_test

import (
	"bytes"
	"testing"

	"nexus.dev/nexus/api/client"
)

// FuzzParseConfig: any document is either refused with a *ConfigError or
// gives a config that writes out and reads back to the same file.
func FuzzParseConfig(f *testing.F) {
	cr := newCreds(f)
	cfg, _ := client.NewConfig(cr.entry())
	cfg.AddContext(client.ContextEntry{Name: "sa", Server: "https://[::1]:7443", CA: cr.ca, Token: "nxsa1.x", HTTP3: true})
	valid, _ := cfg.Marshal(false)
	f.Add(valid)
	js, _ := cfg.Marshal(true)
	f.Add(js)
	f.Add([]byte("apiVersion: v1\nkind: Config\nclusters: [{name: c, server: 'https://a:1', certificateAuthorityFile: ca.crt}]\nusers: [{name: u, tokenFile: t}]\ncontexts: [{name: x, cluster: c, user: u, namespace: web}]\ncurrentContext: x\n"))
	f.Add([]byte("apiVersion: v1\nkind: Config\nclusters: [{name: c, sever: x}]"))
	f.Add([]byte("{\"apiVersion\":\"v1\",\"kind\":\"Config\",\"users\":[{\"name\":\"u\",\"clientKeyData\":\"LS0t\"}]}"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := client.ParseConfig(doc)
		if err != nil {
			if _, ok := err.(*client.ConfigError); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		out, err := c.Marshal(false)
		if err != nil {
			t.Fatalf("marshal a parsed config: %v", err)
		}
		back, err := client.ParseConfig(out)
		if err != nil {
			t.Fatalf("a parsed config does not parse after writing: %v\n%s", err, out)
		}
		again, _ := back.Marshal(false)
		if !bytes.Equal(out, again) {
			t.Fatalf("written twice, differently:\n%s\n%s", out, again)
		}
	})
}
