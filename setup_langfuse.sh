# Configure Langfuse keys for this shell and check them against the host.
#
#   source setup_langfuse.sh          # bash
#
# Keys come, in this order, from the environment (LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY),
# from a git-ignored .env next to this script (LANGFUSE_* lines only; it is parsed, not run),
# or from a prompt (the secret is read hidden). The host is LANGFUSE_BASE_URL, else
# LANGFUSE_HOST, else https://cloud.langfuse.com. The keys are then checked with
# GET /api/public/projects (what the SDK's auth_check does) and the result reported.
# This file contains no key and never prints the secret (only a masked form).

_langfuse_mask() {
    local key="$1"
    if [ "${#key}" -lt 12 ]; then printf '****'; return; fi
    case "$key" in
        sk-lf-*|pk-lf-*) printf '%s****%s' "${key:0:6}" "${key: -4}" ;;
        *) printf '%s****%s' "${key:0:2}" "${key: -4}" ;;
    esac
}

_langfuse_read_env_file() {
    # Take LANGFUSE_* assignments from .env without executing it; the environment wins.
    local file="$1" line name value
    [ -f "$file" ] || return 1
    case "$(ls -ld -- "$file" 2>/dev/null)" in
        -rw-------*|-r--------*) ;;
        *) if [ -O "$file" ] && chmod 600 "$file" 2>/dev/null; then
               echo "Langfuse: $file was readable by other users; it is now mode 600." >&2
           fi ;;
    esac
    while IFS= read -r line || [ -n "$line" ]; do
        line="${line#export }"
        case "$line" in
            LANGFUSE_PUBLIC_KEY=*|LANGFUSE_SECRET_KEY=*|LANGFUSE_BASE_URL=*|LANGFUSE_HOST=*) ;;
            *) continue ;;
        esac
        name="${line%%=*}"
        value="${line#*=}"
        value="${value%\"}"; value="${value#\"}"; value="${value%\'}"; value="${value#\'}"
        if [ -z "${!name}" ] && [ -n "$value" ]; then
            export "$name=$value"
        fi
    done < "$file"
    return 0
}

_langfuse_auth_check() {
    # Prints the HTTP status of GET /api/public/projects (000 = host unreachable).
    local url="$1/api/public/projects"
    if command -v curl >/dev/null 2>&1; then
        # The credentials go through stdin, not argv: argv is visible to `ps`.
        printf 'user = "%s:%s"\n' "$LANGFUSE_PUBLIC_KEY" "$LANGFUSE_SECRET_KEY" |
            curl --silent --output /dev/null --write-out '%{http_code}' --max-time 10 \
                 --config - "$url" 2>/dev/null
        return 0
    fi
    LANGFUSE_CHECK_URL="$url" "${LANGFUSE_PYTHON:-python3}" - <<'PY' 2>/dev/null || printf '000'
import base64, os, urllib.error, urllib.request
token = base64.b64encode(("%s:%s" % (os.environ["LANGFUSE_PUBLIC_KEY"],
                                     os.environ["LANGFUSE_SECRET_KEY"])).encode()).decode()
req = urllib.request.Request(os.environ["LANGFUSE_CHECK_URL"],
                             headers={"Authorization": "Basic " + token})
try:
    with urllib.request.urlopen(req, timeout=10) as resp:
        print(resp.status, end="")
except urllib.error.HTTPError as exc:
    print(exc.code, end="")
except Exception:
    print("000", end="")
PY
}

_langfuse_setup() {
    local here env_file source_desc prompted="" status host answer
    here="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
    env_file="$here/.env"

    if [ -n "$LANGFUSE_PUBLIC_KEY" ] && [ -n "$LANGFUSE_SECRET_KEY" ]; then
        source_desc="environment"
    elif _langfuse_read_env_file "$env_file" && [ -n "$LANGFUSE_PUBLIC_KEY" ] \
            && [ -n "$LANGFUSE_SECRET_KEY" ]; then
        source_desc="$env_file"
    else
        if [ ! -t 0 ]; then
            echo "Langfuse: no keys in the environment or $env_file, and no terminal to ask." >&2
            echo "Set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY; tracing stays disabled." >&2
            return 1
        fi
        if [ -z "$LANGFUSE_PUBLIC_KEY" ]; then
            read -r -p "Langfuse public key (pk-lf-...): " LANGFUSE_PUBLIC_KEY
        fi
        if [ -z "$LANGFUSE_SECRET_KEY" ]; then
            read -r -s -p "Langfuse secret key (hidden): " LANGFUSE_SECRET_KEY
            echo
        fi
        if [ -z "$LANGFUSE_PUBLIC_KEY" ] || [ -z "$LANGFUSE_SECRET_KEY" ]; then
            echo "Langfuse: both keys are needed; tracing stays disabled." >&2
            return 1
        fi
        source_desc="prompt"
        prompted=1
    fi
    export LANGFUSE_PUBLIC_KEY LANGFUSE_SECRET_KEY

    host="${LANGFUSE_BASE_URL:-${LANGFUSE_HOST:-https://cloud.langfuse.com}}"
    host="${host%/}"
    export LANGFUSE_BASE_URL="$host"

    echo "Langfuse keys from $source_desc: public $(_langfuse_mask "$LANGFUSE_PUBLIC_KEY"), secret $(_langfuse_mask "$LANGFUSE_SECRET_KEY")"
    status="$(_langfuse_auth_check "$host")"
    case "$status" in
        200) echo "Langfuse auth check OK: $host accepted the keys." ;;
        401|403) echo "Langfuse auth check FAILED: $host rejected the keys (HTTP $status)." >&2 ;;
        000|"") echo "Langfuse auth check FAILED: $host is unreachable (check LANGFUSE_BASE_URL / network)." >&2 ;;
        *) echo "Langfuse auth check FAILED: $host answered HTTP $status." >&2 ;;
    esac

    if [ -n "$prompted" ] && [ "$status" = "200" ] && [ -t 0 ]; then
        read -r -p "Save the keys to $env_file (git-ignored, mode 600)? [y/N] " answer
        case "$answer" in
            y|Y|yes)
                if command -v git >/dev/null 2>&1 && ! git -C "$here" check-ignore -q "$env_file" 2>/dev/null; then
                    echo "Not saved: $env_file is not git-ignored here." >&2
                else
                    # umask in a subshell (never the caller's: this file is sourced); chmod
                    # because an existing .env keeps its mode when written over.
                    (umask 077 && printf 'LANGFUSE_PUBLIC_KEY=%s\nLANGFUSE_SECRET_KEY=%s\nLANGFUSE_BASE_URL=%s\n' \
                        "$LANGFUSE_PUBLIC_KEY" "$LANGFUSE_SECRET_KEY" "$host" > "$env_file" \
                        && chmod 600 "$env_file")
                    echo "Saved to $env_file."
                fi
                ;;
        esac
    fi
    [ "$status" = "200" ]
}

_langfuse_main() {
    # Keep the secret out of an xtrace log, run, then restore the caller's shell options.
    local xtrace rc
    xtrace="$(set +o | grep xtrace)"
    set +x
    _langfuse_setup
    rc=$?
    eval "$xtrace"
    if [ "${BASH_SOURCE[0]}" = "$0" ]; then
        echo "Note: run as a script, the keys are not kept; use: source setup_langfuse.sh" >&2
    fi
    unset -f _langfuse_setup _langfuse_mask _langfuse_read_env_file _langfuse_auth_check \
        _langfuse_main
    return "$rc"
}

# When sourced, `return` (never `exit`: that would close the caller's shell).
_langfuse_main || return 1 2>/dev/null || exit 1
