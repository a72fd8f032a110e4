# bash completion for halizard: subcommands, options, pool-wide config keys, VM and host names.
# A package installs it as /usr/share/bash-completion/completions/halizard; by hand:
#   . completion/halizard.bash
# Names come from `halizard _complete vms|hosts|keys` (with the --xapi, --user and
# --password-file already typed on the line), which answers within two seconds or not at all.

# Append to COMPREPLY the words of `halizard _complete KIND` that start with $cur, quoted for the
# shell (VM names may hold spaces). No compgen -W here: it would expand what a name contains.
_halizard_names() {
    local kind=$1 word quoted i
    local -a conn=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --xapi | --user | --password-file) conn+=("${COMP_WORDS[i]}" "${COMP_WORDS[i + 1]}") ;;
        esac
    done
    while IFS= read -r word; do
        if [[ -n $word && $word == "$cur"* ]]; then
            printf -v quoted '%q' "$word"
            COMPREPLY+=("$quoted")
        fi
    done < <("${COMP_WORDS[0]}" _complete "$kind" "${conn[@]}" 2>/dev/null)
}

_halizard_words() {  # fixed words of ours: compgen -W is safe for them
    local IFS=$' \t\n'
    COMPREPLY+=($(compgen -W "$1" -- "$cur"))
}

_halizard_files() {
    compopt -o filenames 2>/dev/null
    local IFS=$'\n'
    COMPREPLY+=($(compgen -f -- "$cur"))
}

_halizard() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    COMPREPLY=()
    # What the operator typed in quotes or with backslashes, as the word it stands for.
    cur=${cur#[\"\']}
    cur=${cur//\\/}

    local conn="--xapi --user --password-file"
    local -a words=()
    local i word
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        case $word in
            --xapi | --user | --password-file | --config | --host | --timeout | --watch | \
                --restart | --order | --start-delay | --seeds | --seed | --report | --jobs | \
                --explore | --faults | --count | --config-variant) ((i++)) ;;
            -*) ;;
            *) words+=("$word") ;;
        esac
    done

    case $prev in
        --password-file | --config | --report) _halizard_files; return ;;
        --restart) _halizard_words "restart best-effort never"; return ;;
        --host) _halizard_names hosts; return ;;
        --explore) _halizard_words "random exhaustive"; return ;;
        --config-variant) _halizard_words "fence-agent gateway-only"; return ;;
        --channel) _halizard_words "journal xapi email webhook"; return ;;
        --xapi | --user | --timeout | --watch | --order | --start-delay | --seeds | --seed | \
            --jobs | --faults | --count) return ;;
    esac

    local command=${words[0]-} action=${words[1]-}
    case $command in
        "")
            _halizard_words "status enable disable maintenance vm config import-ha-lizard
                             alert simulate --version --help" ;;
        status) _halizard_words "--json --watch $conn" ;;
        enable) _halizard_words "--wait --timeout $conn" ;;
        disable) _halizard_words "--yes --wait --timeout $conn" ;;
        maintenance)
            if [[ -z $action ]]; then
                _halizard_words "on off"
            else
                _halizard_words "--host --yes --timeout $conn"
            fi ;;
        vm)
            case $action in
                "") _halizard_words "list set" ;;
                list) _halizard_words "--json $conn" ;;
                set)
                    if [[ $cur == -* ]]; then
                        _halizard_words "--restart --order --start-delay $conn"
                    else
                        _halizard_names vms
                    fi ;;
            esac ;;
        config)
            case $action in
                "") _halizard_words "validate show set unset" ;;
                validate) _halizard_files ;;
                show) _halizard_words "--json --config $conn" ;;
                set | unset)
                    if [[ $cur == -* ]]; then
                        _halizard_words "--config $conn"
                    elif ((${#words[@]} == 2)); then
                        _halizard_names keys
                    elif [[ $action == set && ${words[2]} == gateway_policy ]]; then
                        _halizard_words "any all majority"
                    fi ;;
            esac ;;
        import-ha-lizard) _halizard_words "--dry-run --yes $conn" ;;
        alert)
            case $action in
                "") _halizard_words "test" ;;
                test) _halizard_words "--channel --config --json" ;;
            esac ;;
        simulate)
            if [[ $cur == -* ]]; then
                _halizard_words "--seeds --seed --config --json --report --jobs --explore
                                 --faults --count --config-variant --save-regressions"
            else
                _halizard_files
            fi ;;
    esac
}

complete -F _halizard halizard
