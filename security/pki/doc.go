// Package pki is the cluster's certificate authority and the credentials every
// endpoint uses for mutual TLS.
//
// The hierarchy is a root CA, one issuing intermediate (both ECDSA P-256) and
// short-lived leaf certificates (node, server, workload, user; 24 h by
// default) whose only URI SAN is the holder's SPIFFE ID. Leaves are issued
// only from certificate signing requests: the requester makes its key and a
// CSR, the CA checks the CSR's signature and key, and then decides the
// subject, the SAN and the validity itself; nothing is copied from the CSR
// but the public key. Private keys therefore never leave the machine that
// uses them.
//
// Policies are pure functions (RenewAt, Bundle.Verify, the rotation steps) so
// they can be tested without clocks or disks; Renewer and Credentials run them
// against an injected Clock.
//
// # Intermediate rotation
//
// A new intermediate is signed by the root and added to the trust Bundle
// (IntermediateRotation.Start); the CA issues from the new one while leaves
// from the old one still verify. After one leaf lifetime every leaf
// has renewed from the new intermediate and IntermediateRotation.DropOld
// removes the old one from the bundle.
//
// # Trust
//
// The Bundle is the complete set of CAs a verifier trusts: a chain verifies
// only through the bundle's own intermediates to one of its roots, and any
// intermediates a peer presents are ignored. That is what makes dropping an
// intermediate effective (its leaves stop verifying even though the root
// that signed it is still trusted), and it means a new CA must reach every
// verifier's bundle before leaves from it are presented.
//
// # Root rotation
//
// Rotating the root is the same overlap one level up, done by hand because
// the root key is normally kept offline (encrypted with a passphrase):
//
//  1. Make a new root (NewRoot) and a new intermediate under it
//     (Root.NewIssuer). Add both to the bundle next to the old ones
//     (Bundle.AddRoot, IntermediateRotation.Start), distribute that bundle
//     and wait until every verifier has it: from then on both hierarchies
//     are trusted.
//  2. Issue from the new intermediate. Leaves from the old and the new
//     hierarchy verify everywhere.
//  3. After one leaf lifetime every leaf has renewed from the new
//     intermediate: drop the old intermediate (IntermediateRotation.DropOld)
//     and the old root (Bundle.RemoveRoot), distribute the bundle, and give
//     joiners the new root's pin (Pin). Keep the old root key until then so
//     step 1 can be undone.
//
// TestRootRotationWalk follows these steps.
//
// # Revocation
//
// Certificates are revoked by serial number. Serials are 128 random bits, so
// they are unique across intermediates and the RevocationList is one list
// for the whole cluster. It is signed by the issuing intermediate (which has
// KeyUsageCRLSign) and carries the signer's certificate, so any verifier can
// check it against its bundle whatever server or store delivered it.
package pki
