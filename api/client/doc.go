// Package client is the one Go client of the Nexus API: what the `nexus`
// command line, the node agent and the tests use to talk to a server.
//
// It reads the client config file (contexts naming a server, its CA and a
// user's certificate or token), speaks HTTPS with HTTP/2 or HTTP/3 over
// mutual TLS, and offers the API's verbs on typed objects: Get, List
// (following continue pages), Create, Update, Patch, Delete, UpdateStatus,
// Watch (resuming by itself after a dropped connection, without losing or
// repeating an event) and Apply (create or update, and say which).
// Failures are typed: an *APIError carries the server's problem document,
// a *ConnectionError says which server could not be reached.
package client
