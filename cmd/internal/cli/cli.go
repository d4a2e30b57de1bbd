// Package cli holds what imagevol's commands share in reading their command lines.
//
// It imports only the standard library.
package cli

import "flag"

// ParseInterspersed parses fs's flags wherever they stand among args, before or after the
// positional arguments (the flag package alone stops at the first of those), and returns the
// positional ones: "replay VOLUME --run RUN" works as "replay --run RUN VOLUME" does.
func ParseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
