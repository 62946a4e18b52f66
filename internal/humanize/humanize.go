// Package humanize writes amounts for people to read.
package humanize

import "fmt"

// Bytes writes n bytes in binary units with one decimal: "512 B",
// "12.0 MiB", "3.0 GiB" (up to PiB).
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
