// Package edit lets a person change a stored object in their editor, as
// `kubectl edit` does: the object is written out as YAML, the editor
// opens it, and what is saved is sent back as an update carrying the
// resourceVersion that was read. If someone else changed the object in
// the meantime, the edit is carried over to the current version and shown
// again for review; if what was saved does not parse or the server
// refuses it, the editor opens again with the problem at the top. The
// editor itself is a function, so the loop is tested without a terminal.
package edit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/client/printers"
	"nexus.dev/nexus/api/mergepatch"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/internal/fsutil"
)

// Editor opens the file at path for a person to change, and returns when
// they are done.
type Editor func(ctx context.Context, path string) error

// Options say what to edit and how.
type Options struct {
	Client    *client.Client
	Resource  *types.Resource
	Namespace string
	Name      string
	Editor    Editor
	// Out receives the messages for the person (what happened).
	Out io.Writer
	// TempDir holds the file being edited (default os.TempDir()).
	TempDir string
}

// Result is how an edit ended.
type Result struct {
	// Object is the stored object after the update; nil when nothing was
	// changed (the edit was cancelled or saved unchanged).
	Object types.Object
}

// ErrCancelled is an edit given up because its errors were not fixed.
var ErrCancelled = errors.New("edit cancelled")

// maxEditedSize bounds the file read back from the editor.
const maxEditedSize = 16 << 20

const header = `# Edit the object below and save to update it. Lines beginning with '#' are
# ignored; an empty file, or one saved without changes, cancels the edit.
# If the update fails, this file is opened again with the reason at the top.
#
`

// Run edits one object until it is saved, cancelled or fails.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	base, err := o.Client.Get(ctx, o.Resource, o.Namespace, o.Name)
	if err != nil {
		return Result{}, err
	}
	ref := printers.Ref(base)
	y, err := printers.YAMLOf(base)
	if err != nil {
		return Result{}, err
	}
	f, err := os.CreateTemp(o.TempDir, "nexus-edit-*.yaml")
	if err != nil {
		return Result{}, fmt.Errorf("edit %s: %w", ref, err)
	}
	path := f.Name()
	f.Close()
	keep := false
	defer func() {
		if !keep {
			os.Remove(path)
		}
	}()
	buf := append([]byte(header), y...)
	var lastBody []byte // what was saved after the previous failure
	for {
		if err := os.WriteFile(path, buf, 0o600); err != nil {
			return Result{}, fmt.Errorf("edit %s: %w", ref, err)
		}
		if err := o.Editor(ctx, path); err != nil {
			keep = true
			return Result{}, fmt.Errorf("edit %s: the editor failed: %w (your changes, if any, are in %s)", ref, err, path)
		}
		saved, err := fsutil.ReadFileLimit(path, maxEditedSize)
		if err != nil {
			keep = true
			return Result{}, fmt.Errorf("edit %s: %w", ref, err)
		}
		// Comment lines become empty ones, so that the line numbers of a
		// YAML error are those of the file the person sees.
		body := blankComments(saved)
		content := bytes.TrimLeft(body, "\n")
		if len(bytes.TrimSpace(body)) == 0 {
			fmt.Fprintln(o.Out, "Edit cancelled: the saved file was empty.")
			return Result{}, nil
		}
		if lastBody != nil && bytes.Equal(content, lastBody) {
			keep = true
			return Result{}, fmt.Errorf("%w: the file was saved again without fixing the problem above; your changes are in %s", ErrCancelled, path)
		}
		edited, err := types.Decode(body, o.Resource)
		if err == nil {
			err = sameIdentity(base, edited)
		}
		if err != nil {
			buf, lastBody = withProblem(err, content), content
			continue
		}
		changed, err := differs(base, edited)
		if err != nil {
			return Result{}, err
		}
		if !changed {
			fmt.Fprintln(o.Out, "Edit cancelled: no changes made.")
			return Result{}, nil
		}
		edited.GetObjectMeta().ResourceVersion = base.GetObjectMeta().ResourceVersion
		updated, err := o.Client.Update(ctx, edited)
		switch {
		case err == nil:
			fmt.Fprintf(o.Out, "%s edited\n", ref)
			return Result{Object: updated}, nil
		case client.IsConflict(err):
			// Someone else changed it: carry the edit over to the current
			// version and let the person look at the result.
			cur, merged, err := carryOver(ctx, o, base, edited)
			if err != nil {
				keep = true
				return Result{}, fmt.Errorf("edit %s: it changed on the server and your edit could not be carried over: %w (your changes are in %s)", ref, err, path)
			}
			fmt.Fprintf(o.Out, "%s changed on the server while you edited it; your changes were applied to the current version: review them and save again.\n", ref)
			base = cur
			buf, lastBody = append([]byte(conflictHeader(cur)), merged...), nil
		case client.IsInvalid(err) || client.IsBadRequest(err):
			buf, lastBody = withProblem(err, content), content
		default:
			keep = true
			return Result{}, fmt.Errorf("%w (your changes are in %s)", err, path)
		}
	}
}

// ShellEditor runs cmdline (from $EDITOR: a program, maybe with
// arguments) on the file through sh, attached to the given terminal.
func ShellEditor(cmdline string, stdin io.Reader, stdout, stderr io.Writer) Editor {
	return func(ctx context.Context, path string) error {
		cmd := exec.CommandContext(ctx, "sh", "-c", cmdline+` "$1"`, "nexus-edit", path)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w", cmdline, err)
		}
		return nil
	}
}

// blankComments empties the lines that start with '#' (after blanks), as
// the header and problem notes are written.
func blankComments(b []byte) []byte {
	lines := bytes.SplitAfter(b, []byte("\n"))
	for i, line := range lines {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] == '#' {
			lines[i] = []byte("\n")
		}
	}
	return bytes.Join(lines, nil)
}

func withProblem(err error, body []byte) []byte {
	var b strings.Builder
	b.WriteString(header)
	b.WriteString("# The object could not be saved:\n")
	msg := err.Error()
	var ae *client.APIError
	if errors.As(err, &ae) && len(ae.Fields) > 0 {
		msg = fmt.Sprintf("%s %q is invalid:", ae.Kind, ae.Name)
		for _, f := range ae.Fields {
			msg += "\n  * " + f.Error()
		}
	}
	var de *types.DecodeError
	if errors.As(err, &de) && len(de.Fields) > 0 {
		msg = de.Msg + ":"
		for _, f := range de.Fields {
			msg += "\n  * " + f.Error()
		}
	}
	for _, line := range strings.Split(msg, "\n") {
		b.WriteString("#   " + line + "\n")
	}
	b.WriteString("#\n")
	return append([]byte(b.String()), body...)
}

func conflictHeader(cur types.Object) string {
	return header + fmt.Sprintf("# The object changed on the server while you edited it (it is now at\n"+
		"# resourceVersion %s). Your changes were applied to the current version below:\n"+
		"# review them, and save to update it, or empty the file to cancel.\n#\n", cur.GetObjectMeta().ResourceVersion)
}

// sameIdentity refuses an edit that renames the object or moves it: that
// would be another object.
func sameIdentity(base, edited types.Object) error {
	b, e := base.GetObjectMeta(), edited.GetObjectMeta()
	if e.Name != b.Name {
		return fmt.Errorf("metadata.name: cannot change from %q to %q in an edit (create the new object instead)", b.Name, e.Name)
	}
	if e.Namespace != "" && e.Namespace != b.Namespace {
		return fmt.Errorf("metadata.namespace: cannot change from %q to %q in an edit", b.Namespace, e.Namespace)
	}
	e.Namespace = b.Namespace
	return nil
}

// differs reports whether edited changes anything of base.
func differs(base, edited types.Object) (bool, error) {
	a, err := json.Marshal(base)
	if err != nil {
		return false, err
	}
	b, err := json.Marshal(edited)
	if err != nil {
		return false, err
	}
	p, err := mergepatch.Diff(a, b)
	if err != nil {
		return false, err
	}
	var patch map[string]any
	if err := json.Unmarshal(p, &patch); err != nil {
		return false, err
	}
	delete(patch, "status") // the object's update keeps the stored status
	if m, ok := patch["metadata"].(map[string]any); ok {
		delete(m, "resourceVersion")
		if len(m) == 0 {
			delete(patch, "metadata")
		}
	}
	return len(patch) > 0, nil
}

// carryOver reads the current object and applies to it the changes the
// person made to base, as a merge patch: their edits win where both
// changed a field, the server's changes stay everywhere else.
func carryOver(ctx context.Context, o Options, base, edited types.Object) (types.Object, []byte, error) {
	cur, err := o.Client.Get(ctx, o.Resource, o.Namespace, o.Name)
	if err != nil {
		return nil, nil, err
	}
	bj, err := json.Marshal(base)
	if err != nil {
		return nil, nil, err
	}
	ej, err := json.Marshal(edited)
	if err != nil {
		return nil, nil, err
	}
	cj, err := json.Marshal(cur)
	if err != nil {
		return nil, nil, err
	}
	patch, err := mergepatch.Diff(bj, ej)
	if err != nil {
		return nil, nil, err
	}
	merged, err := mergepatch.Apply(cj, patch)
	if err != nil {
		return nil, nil, err
	}
	m, err := types.Decode(merged, o.Resource)
	if err != nil {
		return nil, nil, err
	}
	m.GetObjectMeta().ResourceVersion = cur.GetObjectMeta().ResourceVersion
	y, err := printers.YAMLOf(m)
	if err != nil {
		return nil, nil, err
	}
	return cur, y, nil
}
