package main

import (
	"fmt"
	"io"
	"strings"
)

// writeBashCompletion writes a bash completion script for imagevolctl: its commands, the
// cache subcommands, each one's flags, and the output formats after -o/--output.
func writeBashCompletion(w io.Writer) error {
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	var cases strings.Builder
	for _, c := range commands {
		if len(c.subs) > 0 {
			var subs []string
			for _, s := range c.subs {
				subs = append(subs, s.name)
				fmt.Fprintf(&cases, "    %q)\n        flags=%q ;;\n", c.name+" "+s.name, strings.Join(flagNames([]string{c.name, s.name}), " "))
			}
			fmt.Fprintf(&cases, "    %q)\n        flags=%q; subs=%q ;;\n", c.name, strings.Join(flagNames([]string{c.name}), " "), strings.Join(subs, " "))
			continue
		}
		words := flagNames([]string{c.name})
		switch c.name {
		case "help":
			fmt.Fprintf(&cases, "    %q)\n        flags=%q; subs=%q ;;\n", c.name, strings.Join(words, " "), strings.Join(names, " "))
		case "completion":
			fmt.Fprintf(&cases, "    %q)\n        flags=%q; subs=%q ;;\n", c.name, strings.Join(words, " "), "bash")
		default:
			fmt.Fprintf(&cases, "    %q)\n        flags=%q ;;\n", c.name, strings.Join(words, " "))
		}
	}
	_, err := fmt.Fprintf(w, bashScript, strings.Join(names, " "), cases.String())
	return err
}

const bashScript = `# bash completion for imagevolctl; load it with: source <(imagevolctl completion bash)
_imagevolctl() {
    local cur prev words cword
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev=""
    [ "$COMP_CWORD" -gt 0 ] && prev="${COMP_WORDS[COMP_CWORD-1]}"
    case "$prev" in
    -o|--output)
        COMPREPLY=($(compgen -W "json yaml table" -- "$cur"))
        return ;;
    esac
    # The command and subcommand typed so far: the first words not starting with "-" (and not
    # the value of -o/--output).
    local path="" i w skip=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        if [ "$skip" = 1 ]; then skip=0; continue; fi
        case "$w" in
        -o|--output) skip=1 ;;
        -*) ;;
        *)
            if [ -z "$path" ]; then path="$w"
            elif [ "$path" = cache ] || [ "$path" = help ]; then path="$path $w"; break
            else break; fi ;;
        esac
    done
    local flags="-o --output --help --version" subs=""
    case "$path" in
    "")
        subs=%[1]q ;;
%[2]s    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$subs" -- "$cur"))
    fi
}
complete -F _imagevolctl imagevolctl
`
