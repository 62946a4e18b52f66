// Package manifest reads the files people keep their objects in (YAML or
// JSON, several documents per file, whole directories) and applies or
// deletes what they describe, document by document, so that one bad
// document is reported with its file and position and the rest still go
// through.
package manifest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/fsutil"
)

// MaxFileSize bounds one manifest file (or standard input): the server
// takes objects of at most 3 MiB, so this is room for many, and a path
// named by mistake is refused instead of read.
const MaxFileSize = 64 << 20

// Stdin is the path that means standard input.
const Stdin = "-"

// Document is one object of a manifest, or why it could not be read.
type Document struct {
	// Source is the file it came from ("-": standard input).
	Source string
	// Index is its position in the file, from 1.
	Index  int
	Object types.Object
	Err    error
}

// Where names the document for messages: "web.yaml (document 2)".
func (d Document) Where() string {
	name := d.Source
	if name == Stdin {
		name = "standard input"
	}
	return fmt.Sprintf("%s (document %d)", name, d.Index)
}

// Read reads the documents of every path in order: files, directories
// (their .yaml, .yml and .json files in name order; with recursive, those
// of subdirectories too) and "-" for stdin. A path that cannot be read is
// an error, before anything is applied; a document that does not decode
// is returned with its Err set.
func Read(paths []string, recursive bool, stdin io.Reader) ([]Document, error) {
	if len(paths) == 0 {
		return nil, errors.New("no manifest given")
	}
	var docs []Document
	for _, p := range paths {
		files, err := expand(p, recursive)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			var data []byte
			if f == Stdin {
				data, err = fsutil.ReadLimit(stdin, "standard input", MaxFileSize)
			} else {
				data, err = fsutil.ReadFileLimit(f, MaxFileSize)
			}
			if err != nil {
				return nil, err
			}
			docs = append(docs, Parse(f, data)...)
		}
	}
	return docs, nil
}

// Parse splits data (from source) into its documents and decodes each.
func Parse(source string, data []byte) []Document {
	raw, err := types.SplitDocuments(data)
	if err != nil {
		return []Document{{Source: source, Index: 1, Err: err}}
	}
	docs := make([]Document, len(raw))
	for i, r := range raw {
		o, err := types.DecodeAny(r)
		docs[i] = Document{Source: source, Index: i + 1, Object: o, Err: err}
	}
	return docs
}

func expand(p string, recursive bool) ([]string, error) {
	if p == Stdin {
		return []string{Stdin}, nil
	}
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	var files []string
	err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != p && !recursive {
				return filepath.SkipDir
			}
			return nil
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".yaml", ".yml", ".json":
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s holds no .yaml, .yml or .json file", p)
	}
	slices.Sort(files)
	return files, nil
}

// Namespace says where namespaced objects without a namespace go.
type Namespace struct {
	// Default is used for documents that name no namespace.
	Default string
	// Explicit is set when the user asked for Default: a document that
	// names another namespace is then refused rather than quietly put
	// somewhere the user did not ask for.
	Explicit bool
}

// place puts a namespaced object in its namespace.
func (n Namespace) place(o types.Object) error {
	r := types.ResourceOf(o)
	m := o.GetObjectMeta()
	if r == nil || !r.Namespaced {
		return nil
	}
	switch {
	case m.Namespace == "":
		m.Namespace = n.Default
	case n.Explicit && m.Namespace != n.Default:
		return fmt.Errorf("%s/%s names namespace %q, but namespace %q was asked for: remove one of them", r.Singular, m.Name, m.Namespace, n.Default)
	}
	return nil
}

// Outcome is what happened to one document.
type Outcome struct {
	Doc    Document
	Result client.ApplyResult
	Err    error
}

// Apply applies every document in order, calling report with each
// outcome as it comes, and returns the ones that failed.
func Apply(ctx context.Context, c *client.Client, docs []Document, ns Namespace, report func(Outcome)) []Outcome {
	return each(ctx, docs, ns, report, func(o types.Object) (client.ApplyResult, error) { return c.Apply(ctx, o) })
}

// Delete deletes the object of every document in order (as Apply does).
func Delete(ctx context.Context, c *client.Client, docs []Document, ns Namespace, report func(Outcome)) []Outcome {
	return each(ctx, docs, ns, report, func(o types.Object) (client.ApplyResult, error) {
		m := o.GetObjectMeta()
		d, err := c.Delete(ctx, types.ResourceOf(o), m.Namespace, m.Name, client.DeleteOptions{})
		return client.ApplyResult{Object: d}, err
	})
}

func each(ctx context.Context, docs []Document, ns Namespace, report func(Outcome), do func(types.Object) (client.ApplyResult, error)) []Outcome {
	var failed []Outcome
	for _, d := range docs {
		out := Outcome{Doc: d, Err: d.Err}
		if out.Err == nil {
			out.Err = ns.place(d.Object)
		}
		if out.Err == nil && ctx.Err() != nil {
			out.Err = ctx.Err()
		}
		if out.Err == nil {
			out.Result, out.Err = do(d.Object)
		}
		if out.Err != nil {
			failed = append(failed, out)
		}
		if report != nil {
			report(out)
		}
	}
	return failed
}
