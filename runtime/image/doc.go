// Package image is Nexus's image store: the content-addressed place where
// container images live between the registry (or an archive) and the runtime.
//
// It pulls images from any OCI or Docker registry, imports OCI layout and
// `docker save` archives and plain root filesystems, unpacks every layer once
// into a snapshot shared by all images that use it, and prepares a container's
// root filesystem as an overlay of those snapshots plus an OCI bundle that
// `nexus runtime run` accepts.
//
// # On-disk layout
//
// Everything lives under Config.Root (`nexus image --root`, by default
// <data-dir>/images):
//
//	lock                        flock: shared by writers, exclusive for GC and cleanup
//	meta.db                     bbolt: image names -> manifest digest, platform, time;
//	                            prepared containers -> the layers they use
//	blobs/sha256/<hex>          manifests, configs and layers as the registry sent them
//	                            (compressed); read-only files named by their digest
//	ingest/                     downloads and imports in progress; emptied at Open and Prune
//	snapshots/<diffID hex>/fs   one unpacked layer, in overlayfs form (whiteouts are
//	                            0/0 character devices, opaque directories carry
//	                            trusted.overlay.opaque)
//	snapshots/<diffID hex>/done.json
//	                            written before the snapshot is renamed into place
//	snapshots/.tmp-*            unpacks in progress; removed at Open and Prune
//	containers/<id>/            a prepared container: config.json (the OCI bundle),
//	                            rootfs/ (the overlay mount), upper/ and work/; its
//	                            record in meta.db names the process that prepared it,
//	                            and Prune releases it once that process is gone and no
//	                            process runs on rootfs/
//
// Every directory of the store, from Root down to each snapshot's and each
// prepared container's own, is 0700: a snapshot keeps the image's setuid
// programs and device nodes as the image made them, and no user but root may
// reach them. Open closes a store an earlier version left traversable.
//
// A snapshot is keyed by the layer's diffID (the digest of the uncompressed
// tar), so two images that carry the same layer differently compressed still
// share it.
//
// # Safety and atomicity
//
// Nothing from outside is trusted. A blob is streamed into ingest/ while it
// is hashed, its size and digest are compared with what the manifest
// promised, and only then is it fsynced and renamed into blobs/: a blob file
// that exists is complete, and a download that fails or is cancelled leaves
// nothing behind. Reads hash again, so a blob damaged on disk is reported
// (naming its digest) instead of being used. A layer is unpacked by
// runtime/image/layer, which refuses entries that escape the snapshot and
// enforces size and entry-count limits; the uncompressed stream is hashed
// while it is unpacked and must match the diffID in the image config, or the
// snapshot is thrown away (a mislabelled layer could otherwise poison every
// image sharing that diffID). An image's name is recorded last, after every
// blob is stored and every layer unpacked, so a name always refers to a
// complete, runnable image.
//
// Concurrent pulls in one process fetch each blob once (singleflight keyed
// by digest) and unpack each layer once (keyed by diffID). Several processes
// may use one store: writers hold a shared flock on Root/lock for the length
// of an operation, garbage collection holds it exclusively, a download
// holds ingest/<hex>.lock so that another process waits for it instead of
// fetching the same blob, and bbolt is opened per transaction.
package image
