package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Rule maps the records it matches to a level. An empty list matches
// anything; a rule with several lists matches when all of them do.
type Rule struct {
	Level Level `json:"level"`
	// Verbs: API verbs (get, list, watch, create, update, patch, delete, ...).
	Verbs []string `json:"verbs,omitempty"`
	// Resources: resource names ("secrets"), or "resource/subresource".
	Resources []string `json:"resources,omitempty"`
	// Users and Groups: the principal's name and any of its groups.
	Users  []string `json:"users,omitempty"`
	Groups []string `json:"groups,omitempty"`
	// Paths: URI paths of requests that name no resource (/healthz); a
	// trailing * matches a prefix.
	Paths []string `json:"paths,omitempty"`
}

// Policy is an ordered list of rules; the first that matches a record sets
// its level, and Default applies when none does.
type Policy struct {
	Rules   []Rule `json:"rules"`
	Default Level  `json:"default"`
}

// DefaultPolicy is the policy of a Log whose Config names none: health and
// metrics not at all, secrets at Metadata (their bodies are redacted
// anyway), reads of anything else not at all (they change nothing, and a
// record each cost more than the read itself: GETs went from 13% to 30% of
// a bare handler's rate with and without them), other mutations with their
// request body, everything else at Metadata. Denials and failures are kept
// whatever the policy says.
func DefaultPolicy() *Policy {
	return &Policy{
		Rules: []Rule{
			{Level: None, Paths: []string{"/healthz", "/readyz", "/livez", "/metrics", "/version"}},
			{Level: Metadata, Resources: []string{"secrets"}},
			{Level: None, Verbs: []string{"get", "list", "watch"}},
			{Level: Request, Verbs: []string{"create", "update", "patch", "delete", "deletecollection"}},
		},
		Default: Metadata,
	}
}

// LevelOf returns the level the policy gives r, before the floor Write
// applies to mutations, denials and events.
func (p *Policy) LevelOf(r *Record) Level {
	for i := range p.Rules {
		if p.Rules[i].matches(r) {
			return p.Rules[i].Level
		}
	}
	return p.Default
}

func (rule *Rule) matches(r *Record) bool {
	if len(rule.Verbs) > 0 && !slices.Contains(rule.Verbs, r.Verb) {
		return false
	}
	if len(rule.Resources) > 0 {
		if r.Resource == "" || !slices.ContainsFunc(rule.Resources, func(s string) bool {
			return s == r.Resource || s == r.Resource+"/"+r.Subresource
		}) {
			return false
		}
	}
	if len(rule.Users) > 0 && !slices.Contains(rule.Users, r.User.Name) {
		return false
	}
	if len(rule.Groups) > 0 && !slices.ContainsFunc(r.User.Groups, func(g string) bool { return slices.Contains(rule.Groups, g) }) {
		return false
	}
	if len(rule.Paths) > 0 {
		if r.Resource != "" {
			return false
		}
		path, _, _ := strings.Cut(r.URI, "?")
		if !slices.ContainsFunc(rule.Paths, func(p string) bool {
			if prefix, ok := strings.CutSuffix(p, "*"); ok {
				return strings.HasPrefix(path, prefix)
			}
			return path == p
		}) {
			return false
		}
	}
	return true
}

// ParsePolicy reads a policy from JSON, e.g.
//
//	{"rules": [{"level": "None", "paths": ["/healthz"]},
//	           {"level": "RequestResponse", "resources": ["roles"], "verbs": ["update"]}],
//	 "default": "Metadata"}
//
// Unknown fields and empty names are refused, naming the rule.
func ParsePolicy(data []byte) (*Policy, error) {
	type rawRule struct {
		Rule
		Level string `json:"level"`
	}
	var raw struct {
		Rules   []rawRule `json:"rules"`
		Default string    `json:"default"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("audit policy: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("audit policy: data after the policy object")
	}
	if raw.Default == "" {
		return nil, fmt.Errorf(`audit policy: "default" level missing (set it, e.g. "Metadata")`)
	}
	def, err := ParseLevel(raw.Default)
	if err != nil {
		return nil, fmt.Errorf("audit policy: default: %w", err)
	}
	p := &Policy{Default: def, Rules: make([]Rule, 0, len(raw.Rules))}
	for i, r := range raw.Rules {
		if r.Level == "" {
			return nil, fmt.Errorf("audit policy: rules[%d].level missing (None, Metadata, Request or RequestResponse)", i)
		}
		if r.Rule.Level, err = ParseLevel(r.Level); err != nil {
			return nil, fmt.Errorf("audit policy: rules[%d].level: %w", i, err)
		}
		fields := []struct {
			name string
			list []string
		}{{"verbs", r.Verbs}, {"resources", r.Resources}, {"users", r.Users}, {"groups", r.Groups}, {"paths", r.Paths}}
		for _, f := range fields {
			for j, s := range f.list {
				if s == "" {
					return nil, fmt.Errorf("audit policy: rules[%d].%s[%d] is empty (remove it, or leave the list out to match anything)", i, f.name, j)
				}
			}
		}
		if len(r.Paths) > 0 && len(r.Resources) > 0 {
			return nil, fmt.Errorf("audit policy: rules[%d] has both paths and resources, which no request matches (split it into two rules)", i)
		}
		p.Rules = append(p.Rules, r.Rule)
	}
	return p, nil
}
