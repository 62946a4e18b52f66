package client

// NewAPIErrorForTest exposes newAPIError to the external tests.
var NewAPIErrorForTest = newAPIError
