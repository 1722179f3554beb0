#!/usr/bin/env bash
# Builds the Debian package: target/debian/m2mnode_<version>_<arch>.deb
# (docs/operations.md "Install"). Needs cargo and dpkg-deb; not root.
#
#   packaging/build-deb.sh            # release build (what ships)
#   packaging/build-deb.sh --debug    # the debug binary, stripped (quick, for tests)
#
# The last line printed is the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
case "${1:-}" in
    "") ;;
    --debug) profile=debug ;;
    *) echo "usage: $0 [--debug]" >&2; exit 2 ;;
esac

log() { echo "build-deb: $*" >&2; }

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
arch="$(dpkg --print-architecture)"
[[ -n "$version" ]] || { log "no version in Cargo.toml"; exit 1; }

log "cargo build ($profile)"
if [[ "$profile" == release ]]; then
    cargo build --release --locked --bin m2mnode >&2
else
    cargo build --locked --bin m2mnode >&2
fi
target="${CARGO_TARGET_DIR:-target}"
bin="$target/$profile/m2mnode"

out="$target/debian"
root="$out/m2mnode_${version}_${arch}"
rm -rf "$root"
mkdir -p "$root/DEBIAN"

# Directories are 0755 and files 0644 unless said otherwise; everything is
# root:root in the archive (--root-owner-group); the postinst hands the
# state directory and the config's group to the m2mnode user.
d() { install -d -m 755 "$root/$1"; }
f() { install -D -m "${3:-644}" "$1" "$root/$2"; }

f "$bin" usr/bin/m2mnode 755
strip --strip-unneeded "$root/usr/bin/m2mnode" 2>/dev/null || true

f systemd/m2mnode.service lib/systemd/system/m2mnode.service
f packaging/sysusers.conf usr/lib/sysusers.d/m2mnode.conf
f packaging/m2mnode.toml etc/m2mnode/m2mnode.toml 640

# Man pages and completions, generated from the clap definitions.
man="$out/man"
rm -rf "$man" && "$bin" man --dir "$man"
d usr/share/man/man1
for page in "$man"/*.1; do
    gzip -9n -c "$page" > "$root/usr/share/man/man1/$(basename "$page").gz"
done
d usr/share/bash-completion/completions
"$bin" completions bash > "$root/usr/share/bash-completion/completions/m2mnode"
d usr/share/zsh/vendor-completions
"$bin" completions zsh > "$root/usr/share/zsh/vendor-completions/_m2mnode"
d usr/share/fish/vendor_completions.d
"$bin" completions fish > "$root/usr/share/fish/vendor_completions.d/m2mnode.fish"

doc=usr/share/doc/m2mnode
f README.md "$doc/README.md"
f docs/operations.md "$doc/operations.md"
f packaging/copyright "$doc/copyright"
install -d -m 755 "$root/$doc"
gzip -9n -c CHANGELOG.md > "$root/$doc/changelog.gz"
# The Mosquitto snippet the operations guide installs.
for m in mosquitto/conf.d/m2mnode.conf mosquitto/passwd.example mosquitto/acl.example; do
    [[ -f "$m" ]] && f "$m" "$doc/mosquitto/${m#mosquitto/}"
done
if compgen -G "examples/*.toml" >/dev/null; then
    for e in examples/*.toml; do
        f "$e" "$doc/examples/$(basename "$e")"
    done
fi

for s in postinst prerm postrm; do
    install -m 755 "packaging/debian/$s" "$root/DEBIAN/$s"
done
install -m 644 packaging/debian/conffiles "$root/DEBIAN/conffiles"
size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
# The newest glibc symbol version the binary uses is the libc6 it needs.
glibc="$(objdump -T "$bin" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s/@GLIBC@/${glibc:-2.34}/" \
    packaging/debian/control > "$root/DEBIAN/control"

deb="$out/m2mnode_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
