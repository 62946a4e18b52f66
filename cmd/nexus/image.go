package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"nexus.dev/nexus/internal/humanize"
	"nexus.dev/nexus/internal/term"
	"nexus.dev/nexus/runtime/image"
	"nexus.dev/nexus/runtime/image/builtin"
)

// imageOptions are the flags every `nexus image` command shares.
type imageOptions struct {
	*globalOptions
	root string
}

func (o *imageOptions) open() (*image.Store, error) {
	root := o.root
	if root == "" {
		root = filepath.Join(o.dataDir, "images")
	}
	return image.Open(image.Config{Root: root})
}

// openFor checks the -o value first (a bad one should not wait for the
// store's lock), then opens the store.
func (o *imageOptions) openFor(output string) (*image.Store, error) {
	if err := checkOutput(output); err != nil {
		return nil, err
	}
	return o.open()
}

// parsePlatformFlag reads --platform; empty means this machine's.
func parsePlatformFlag(platform string) (*v1.Platform, error) {
	if platform == "" {
		return nil, nil
	}
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		return nil, fmt.Errorf("--platform %q: %w (write it like linux/amd64 or linux/arm/v7)", platform, err)
	}
	return p, nil
}

func checkOutput(output string) error {
	if output != "table" && output != "json" {
		return fmt.Errorf("unknown output format %q: use table or json", output)
	}
	return nil
}

func newImageCommand(g *globalOptions) *cobra.Command {
	o := &imageOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage container images: pull, import, list, inspect, remove, prune, release",
		Long: `Manage the node's image store. Images are pulled from any OCI or Docker
registry (credentials from the Docker config file, $DOCKER_CONFIG or
~/.docker/config.json) or imported from an archive (docker save, an OCI image
layout, or a plain root filesystem). Every blob is verified against its digest
when it is stored and when it is read; each layer is unpacked once and shared
by every image that uses it.

Images are named like docker names them: busybox is
docker.io/library/busybox:latest. Commands that take an image also accept
name@sha256:<digest>, a digest, or a unique prefix of the image ID.

The store lives in --root, by default <data-dir>/images.`,
		Example: `  nexus image pull busybox
  nexus image pull ` + builtin.Reference + `
  nexus image import --name example.com/app:1 app.tar
  nexus image ls
  nexus image inspect busybox -o json
  nexus image rm busybox && nexus image prune`,
	}
	cmd.PersistentFlags().StringVar(&o.root, "root", "", "image store directory (default <data-dir>/images)")
	cmd.AddCommand(newImageListCommand(o), newImagePullCommand(o), newImageImportCommand(o),
		newImageInspectCommand(o), newImageRemoveCommand(o), newImagePruneCommand(o), newImageReleaseCommand(o))
	for _, c := range cmd.Commands() {
		run := c.RunE
		c.RunE = func(cmd *cobra.Command, args []string) error { return imageCLIError(run(cmd, args)) }
	}
	return cmd
}

// imageCLIError adds to the image store's errors what to do next in this
// command line's words: which command or flag.
func imageCLIError(err error) error {
	var (
		notFound    *image.NotFoundError
		corrupt     *image.CorruptBlobError
		names       *image.SeveralNamesError
		inUse       *image.InUseError
		platform    *image.PlatformError
		url         *image.URLError
		unreachable *image.RegistryUnreachableError
		running     *image.ContainerInUseError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &notFound) && notFound.Name != "":
		return fmt.Errorf("%w: pull it with `nexus image pull %s` (list images with `nexus image ls`)", err, notFound.Ref)
	case errors.As(err, &notFound):
		return fmt.Errorf("%w (list images with `nexus image ls`)", err)
	case errors.As(err, &corrupt):
		return fmt.Errorf("%w: remove the images that use it with `nexus image rm`, run `nexus image prune` and pull them again", err)
	case errors.As(err, &names):
		return fmt.Errorf("image %s has %d names (%s): remove one name at a time, or all with --force", names.ID, len(names.Names), strings.Join(names.Names, ", "))
	case errors.As(err, &inUse):
		return fmt.Errorf("image %s is used by prepared container(s) %s: release them first with `nexus image release %s`, or remove the name anyway with --force",
			inUse.Image, strings.Join(inUse.Containers, ", "), strings.Join(inUse.Containers, " "))
	case errors.Is(err, image.ErrNameRequired):
		return fmt.Errorf("%w: give one with --name", err)
	case errors.Is(err, image.ErrNameForSeveral):
		return fmt.Errorf("%w: drop --name (the images keep the archive's names)", err)
	case errors.As(err, &platform) && len(platform.Have) > 0:
		return fmt.Errorf("%w: choose one with --platform, or another tag", err)
	case errors.As(err, &url):
		example := ""
		if rest := url.Ref[len(url.Scheme)+3:]; rest != "" {
			example = ", e.g. " + rest
		}
		return fmt.Errorf("%w%s; a registry that speaks only plain HTTP needs --insecure (loopback and private addresses fall back to HTTP without it)", err, example)
	case errors.As(err, &running):
		return fmt.Errorf("%w: stop it with `nexus runtime delete --force %s` (or with the runtime that runs it), then release it", err, running.ID)
	case errors.As(err, &unreachable):
		return fmt.Errorf("%w\nThis machine may have no network access. Without a registry: import the image from an archive with `nexus image import FILE` (e.g. made by `docker save`), or use the built-in image %s (`nexus image pull %s`, or run it with `nexus up` and `nexus run web --image nexus.local/hello`)",
			err, builtin.Reference, builtin.Reference)
	}
	return err
}

func newImageListCommand(o *imageOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List images: name, ID, platform, size and when it was stored",
		Example: `  nexus image ls
  nexus image ls -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := o.openFor(output)
			if err != nil {
				return err
			}
			defer s.Close()
			imgs, err := s.List(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), imgs)
			}
			return printImages(cmd.OutOrStdout(), imgs)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func printImages(w io.Writer, imgs []image.Image) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tPLATFORM\tSIZE\tSTORED")
	for _, i := range imgs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", i.Name, i.ID, i.Platform.String(), humanize.Bytes(i.Size), i.Stored.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

// isBuiltinRef reports whether ref names the built-in image (its
// canonical name, or that name without the tag).
func isBuiltinRef(ref string) bool {
	r, err := image.ParseReference(ref)
	return err == nil && image.CanonicalName(r) == builtin.Reference
}

// ensureBuiltin stores the built-in image made from this nexus binary.
func ensureBuiltin(ctx context.Context, s *image.Store) (image.Image, error) {
	exe, err := os.Executable()
	if err != nil {
		return image.Image{}, fmt.Errorf("find this nexus binary to package as %s: %w", builtin.Reference, err)
	}
	return s.EnsureBuiltin(ctx, exe)
}

// checkBuiltinPlatform refuses a --platform the built-in image cannot have:
// it is this binary, so it is for this machine's platform only.
func checkBuiltinPlatform(p *v1.Platform) error {
	if p == nil || (p.OS == goruntime.GOOS && p.Architecture == goruntime.GOARCH) {
		return nil
	}
	return fmt.Errorf("--platform %s: %s is this nexus binary, built for %s/%s only; drop --platform to pull it", p, builtin.Reference, goruntime.GOOS, goruntime.GOARCH)
}

func newImagePullCommand(o *imageOptions) *cobra.Command {
	var (
		output, platform string
		insecure, quiet  bool
	)
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from a registry",
		Long: `Pull an image from an OCI or Docker registry into the store. A multi-platform
image is resolved to this machine's platform (or --platform). Layers are
fetched in parallel, verified against their digests and unpacked; the name is
recorded only once everything is stored, so an interrupted pull leaves no
half image behind, and pulling again resumes with the blobs already stored.

Credentials come from the Docker config file ($DOCKER_CONFIG/config.json or
~/.docker/config.json, credential helpers included): log in with docker login
or write the file. Registries on loopback and private addresses may be reached
over plain HTTP; --insecure allows that fallback for any registry.

Progress goes to standard error: on a terminal a line per layer, redrawn;
otherwise plain lines, at most one per layer and second.

` + builtin.Reference + ` is built in: pulling it packages this nexus binary (its
"nexus hello" HTTP server as the entrypoint) without contacting any registry.`,
		Example: `  nexus image pull busybox
  nexus image pull docker.io/library/alpine:3.20 --platform linux/arm64
  nexus image pull registry.example.com:5000/team/app@sha256:4f1c…
  nexus image pull -q -o json ghcr.io/org/app:1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			plat, err := parsePlatformFlag(platform)
			if err != nil {
				return err
			}
			builtinRef := isBuiltinRef(args[0])
			if builtinRef {
				if err := checkBuiltinPlatform(plat); err != nil {
					return err
				}
			}
			po := image.PullOptions{Insecure: insecure, Platform: plat}
			s, err := o.openFor(output)
			if err != nil {
				return err
			}
			defer s.Close()
			var prog *pullProgress
			if !quiet {
				prog = newPullProgress(cmd.ErrOrStderr())
				po.Progress = prog.event
			}
			var img image.Image
			if builtinRef {
				img, err = ensureBuiltin(cmd.Context(), s)
			} else {
				img, err = s.Pull(cmd.Context(), args[0], po)
			}
			if prog != nil {
				prog.finish()
			}
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), img)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Pulled %s (%s, %s, ID %s)\n", img.Name, img.Platform.String(), humanize.Bytes(img.Size), img.ID)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&platform, "platform", "", "platform to pull from a multi-platform image, os/arch[/variant] (default this machine's)")
	f.BoolVar(&insecure, "insecure", false, "allow plain HTTP to a registry that does not speak HTTPS")
	f.BoolVarP(&quiet, "quiet", "q", false, "print no progress")
	f.StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func newImageImportCommand(o *imageOptions) *cobra.Command {
	var output, name, platform string
	cmd := &cobra.Command{
		Use:   "import FILE|DIR|-",
		Short: "Import images from a docker save archive, an OCI layout archive or a root filesystem",
		Long: `Import images from an archive file, or - for standard input:

  - a docker save archive (manifest.json; any Docker version's format): its
    images keep their repository tags;
  - an OCI image layout as a tar (oci-layout, index.json and blobs/): images
    are named by their io.containerd.image.name or
    org.opencontainers.image.ref.name annotation;
  - anything else is taken as a root filesystem tar and becomes a one-layer
    image, as does a directory.

Archives may be gzip or zstd compressed. --name names the image; it is needed
for a root filesystem or an unnamed image, and replaces the archive's names
when the archive holds a single image. Every blob is verified, and an entry
that escapes the archive or a layer that escapes the root filesystem is
refused.`,
		Example: `  docker save busybox | nexus image import -
  nexus image import app-oci.tar
  nexus image import --name example.com/rootfs:1 ./rootfs/
  nexus image import --name example.com/rootfs:1 rootfs.tar.gz -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			plat, err := parsePlatformFlag(platform)
			if err != nil {
				return err
			}
			iopts := image.ImportOptions{Name: name, Platform: plat}
			s, err := o.openFor(output)
			if err != nil {
				return err
			}
			defer s.Close()
			// A signal ends the import through its clean-up, which removes
			// the partial copy in ingest/ (the default action would kill
			// the process and leave it there).
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
			var imgs []image.Image
			if args[0] == "-" {
				in, restore := interruptible(cmd.InOrStdin())
				defer restore()
				imgs, err = s.Import(ctx, in, iopts)
			} else {
				imgs, err = s.ImportPath(ctx, args[0], iopts)
			}
			if err != nil && ctx.Err() != nil && cmd.Context().Err() == nil {
				return fmt.Errorf("import interrupted (%v): no image was imported, and the partial copy was removed", context.Cause(ctx))
			}
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), imgs)
			}
			for _, i := range imgs {
				fmt.Fprintf(cmd.OutOrStdout(), "Imported %s (%s, %s, ID %s)\n", i.Name, i.Platform.String(), humanize.Bytes(i.Size), i.ID)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "name for the image, e.g. example.com/app:1")
	f.StringVar(&platform, "platform", "", "platform to import from a multi-platform OCI layout (default this machine's)")
	f.StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// interruptible returns r so that a read blocked on it can be ended: when r
// is a pipe or FIFO (standard input fed by a slow producer), the same
// descriptor in non-blocking mode, which Go's poller serves and a read
// deadline interrupts. restore puts the descriptor back in blocking mode,
// for whoever shares it after this process.
func interruptible(r io.Reader) (io.Reader, func()) {
	f, ok := r.(*os.File)
	if !ok {
		return r, func() {}
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		return r, func() {}
	}
	fd := int(f.Fd())
	if err := unix.SetNonblock(fd, true); err != nil {
		return r, func() {}
	}
	return os.NewFile(uintptr(fd), f.Name()), func() { _ = unix.SetNonblock(fd, false) }
}

func newImageInspectCommand(o *imageOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "inspect REF...",
		Short: "Show an image's digests, platform, layers and run configuration",
		Long: `Show an image's manifest and config digests, platform, names, layers (with
sizes and whether each is unpacked), its run configuration (entrypoint, cmd,
environment, working directory, user, exposed ports) and the prepared
containers using it. The manifest and config are verified as they are read.
-o json prints an array with one object per image.`,
		Example: `  nexus image inspect busybox
  nexus image inspect 4f1c2a9b03de -o json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.openFor(output)
			if err != nil {
				return err
			}
			defer s.Close()
			var all []*image.Details
			for _, ref := range args {
				d, err := s.Inspect(cmd.Context(), ref)
				if err != nil {
					return err
				}
				all = append(all, d)
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), all)
			}
			for i, d := range all {
				if i > 0 {
					fmt.Fprintln(cmd.OutOrStdout())
				}
				if err := printDetails(cmd.OutOrStdout(), d); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func printDetails(w io.Writer, d *image.Details) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("Name", d.Name)
	row("Names", strings.Join(d.Names, ", "))
	row("ID", d.ID)
	row("Digest", d.Digest.String())
	row("Config", d.Config.String())
	row("Media type", string(d.MediaType))
	row("Platform", d.Platform.String())
	if !d.Created.IsZero() {
		row("Created", d.Created.UTC().Format(time.RFC3339))
	}
	row("Stored", d.Stored.UTC().Format(time.RFC3339))
	row("Size", humanize.Bytes(d.Size))
	row("Entrypoint", quoteArgs(d.RunConfig.Entrypoint))
	row("Cmd", quoteArgs(d.RunConfig.Cmd))
	row("Env", strings.Join(d.RunConfig.Env, " "))
	row("Working dir", d.RunConfig.WorkingDir)
	row("User", d.RunConfig.User)
	row("Exposed ports", strings.Join(d.RunConfig.ExposedPorts, " "))
	row("Containers", strings.Join(d.Containers, ", "))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "Layers:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  DIGEST\tSIZE\tUNPACKED\tMEDIA TYPE")
	for _, l := range d.Layers {
		fmt.Fprintf(tw, "  %s\t%s\t%v\t%s\n", l.Digest, humanize.Bytes(l.Size), l.Unpacked, l.MediaType)
	}
	return tw.Flush()
}

func quoteArgs(args []string) string {
	if args == nil {
		return ""
	}
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = fmt.Sprintf("%q", a)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func newImageRemoveCommand(o *imageOptions) *cobra.Command {
	var (
		output string
		force  bool
	)
	cmd := &cobra.Command{
		Use:     "rm REF...",
		Aliases: []string{"remove"},
		Short:   "Remove image names; nexus image prune then reclaims the space",
		Long: `Remove image names. The image's content stays until nexus image prune, which
deletes what no name and no prepared container uses. An image used by a
prepared container is refused unless --force (nexus image release releases
the container); given by ID, an image with several names is refused unless
--force, which removes them all.`,
		Example: `  nexus image rm busybox
  nexus image rm --force 4f1c2a9b03de && nexus image prune`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.openFor(output)
			if err != nil {
				return err
			}
			defer s.Close()
			removed := []string{}
			for _, ref := range args {
				names, err := s.Remove(cmd.Context(), ref, image.RemoveOptions{Force: force})
				if err != nil {
					return err
				}
				removed = append(removed, names...)
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), map[string][]string{"removed": removed})
			}
			for _, n := range removed {
				fmt.Fprintf(cmd.OutOrStdout(), "Removed %s\n", n)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even if a prepared container uses the image, and every name of an image given by ID")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func newImagePruneCommand(o *imageOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Delete blobs and unpacked layers no image or prepared container uses",
		Long: `Delete every blob and unpacked layer that no named image and no prepared
container uses, and what interrupted pulls and imports left behind. Layers
shared with images that remain are kept. It waits for pulls and imports in
progress.

Prepared containers whose preparing process is gone (a killed agent, say)
and on which no process runs are released first, so their layers can go too;
a container still running keeps its layers until it is stopped.`,
		Example: `  nexus image prune
  nexus image prune -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := o.openFor(output)
			if err != nil {
				return err
			}
			defer s.Close()
			rep, err := s.Prune(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Deleted %s; reclaimed %s\n", pruneSummary(rep), humanize.Bytes(rep.Bytes))
			return err
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func newImageReleaseCommand(o *imageOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "release ID...",
		Short: "Release prepared containers: unmount and delete their root file systems",
		Long: `Release containers prepared from the store's images: unmount each one's root
file system and delete its writable layer and bundle, so that nexus image rm
and nexus image prune can remove the image. The process that prepared a
container normally releases it; this is for one left behind (an agent killed,
say). A container still running is refused: stop it first with
nexus runtime delete --force ID. nexus image inspect lists an image's prepared
containers; nexus image prune releases those whose preparing process is gone.`,
		Example: `  nexus image release nx-5f0c2a9e-7d1b-4c1e-9a55-0b6f3d2e8c41
  nexus runtime delete --force web-1 && nexus image release web-1`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.openFor(output)
			if err != nil {
				return err
			}
			defer s.Close()
			released := []string{}
			for _, id := range args {
				if err := s.Release(cmd.Context(), id); err != nil {
					return err
				}
				released = append(released, id)
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), map[string][]string{"released": released})
			}
			for _, id := range released {
				fmt.Fprintf(cmd.OutOrStdout(), "Released %s\n", id)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// pruneSummary lists what a prune deleted: "2 blobs, 1 unpacked layer and
// 1 partial download or import".
func pruneSummary(rep image.PruneReport) string {
	count := func(n int, one, many string) string {
		if n == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %s", n, many)
	}
	parts := []string{count(len(rep.Blobs), "blob", "blobs"), count(len(rep.Snapshots), "unpacked layer", "unpacked layers")}
	if n := rep.Leftovers.Partial; n > 0 {
		parts = append(parts, count(n, "partial download or import", "partial downloads or imports"))
	}
	if n := rep.Leftovers.Unpacks; n > 0 {
		parts = append(parts, count(n, "unfinished unpack", "unfinished unpacks"))
	}
	if n := len(rep.Released); n > 0 {
		parts = append(parts, count(n, "abandoned prepared container", "abandoned prepared containers")+" ("+strings.Join(rep.Released, ", ")+")")
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}

// humanBytes formats n in binary units: 512 B, 12.0 MiB.

// pullProgress shows a pull's progress: on a terminal, a line per blob
// redrawn in place and a total; elsewhere plain lines, at most one per blob
// per second while it downloads, and one when it is done.
type pullProgress struct {
	w        io.Writer
	tty      bool
	now      func() time.Time
	order    []v1.Hash
	blobs    map[v1.Hash]*blobProgress
	drawn    int // lines drawn last time (terminal)
	lastDraw time.Time
}

type blobProgress struct {
	kind        string
	state       image.ProgressState
	done, total int64
	lastLine    time.Time
}

func newPullProgress(w io.Writer) *pullProgress {
	return &pullProgress{w: w, tty: isTerminal(w), now: time.Now, blobs: map[v1.Hash]*blobProgress{}}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	return term.IsTerminal(int(f.Fd()))
}

func shortDigest(d v1.Hash) string {
	if len(d.Hex) < 12 {
		return d.String()
	}
	return d.Algorithm + ":" + d.Hex[:12]
}

// event records e; the store serialises calls.
func (p *pullProgress) event(e image.ProgressEvent) {
	b, ok := p.blobs[e.Digest]
	if !ok {
		b = &blobProgress{kind: e.Kind}
		p.blobs[e.Digest] = b
		p.order = append(p.order, e.Digest)
	}
	changed := b.state != e.State
	b.state, b.done, b.total = e.State, e.Done, e.Total
	now := p.now()
	if p.tty {
		if changed || now.Sub(p.lastDraw) >= 100*time.Millisecond {
			p.draw()
			p.lastDraw = now
		}
		return
	}
	switch e.State {
	case image.StateDownloading:
		if now.Sub(b.lastLine) >= time.Second {
			b.lastLine = now
			fmt.Fprintf(p.w, "pulling %s %s %s/%s\n", b.kind, shortDigest(e.Digest), humanize.Bytes(e.Done), humanize.Bytes(e.Total))
		}
	case image.StateDone, image.StateExists, image.StateUnpacked:
		if changed {
			fmt.Fprintf(p.w, "%s %s %s (%s)\n", e.State, b.kind, shortDigest(e.Digest), humanize.Bytes(e.Total))
		}
	}
}

// draw redraws every blob's line and the total in place.
func (p *pullProgress) draw() {
	var sb strings.Builder
	if p.drawn > 0 {
		fmt.Fprintf(&sb, "\x1b[%dA", p.drawn)
	}
	var done, total int64
	var complete int
	for _, d := range p.order {
		b := p.blobs[d]
		done += b.done
		total += b.total
		if b.state == image.StateUnpacked || (b.kind == "config" && (b.state == image.StateDone || b.state == image.StateExists)) {
			complete++
		}
		fmt.Fprintf(&sb, "\r\x1b[K%s %s  %-11s %s/%s\n", b.kind, shortDigest(d), b.state, humanize.Bytes(b.done), humanize.Bytes(b.total))
	}
	fmt.Fprintf(&sb, "\r\x1b[Ktotal  %d/%d blobs  %s/%s\n", complete, len(p.order), humanize.Bytes(done), humanize.Bytes(total))
	p.drawn = len(p.order) + 1
	io.WriteString(p.w, sb.String())
}

// finish draws the final state.
func (p *pullProgress) finish() {
	if p.tty && len(p.order) > 0 {
		p.draw()
	}
}
