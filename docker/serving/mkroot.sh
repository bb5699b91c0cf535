#!/bin/sh
# Builds /rootfs: the least a Python server needs from the base image (interpreter, stdlib
# minus tooling, the shared libraries ldd finds, an `app` user). The serving image copies it
# onto `scratch`, dropping apt, dpkg, perl, pip and the shell (~190 MB of the base).
set -eu
R=/rootfs
PY=$(readlink -f /usr/bin/python3)
VER=$(basename "$PY")  # python3.11
mkdir -p $R/usr/bin $R/etc $R/tmp $R/home/app
chmod 1777 $R/tmp
# keep the base's merged-/usr layout so the ELF interpreter path resolves
for d in lib lib64 bin sbin; do
    [ -L /$d ] && ln -s "$(readlink /$d)" $R/$d
done
cp -a /usr/bin/python3 "$PY" $R/usr/bin/
tar -C / -cf - --exclude="usr/lib/$VER/idlelib" --exclude="usr/lib/$VER/tkinter" \
    --exclude="usr/lib/$VER/turtledemo" --exclude="usr/lib/$VER/ensurepip" \
    --exclude="usr/lib/$VER/lib2to3" --exclude="usr/lib/$VER/pydoc_data" \
    --exclude="usr/lib/$VER/distutils" --exclude="usr/lib/$VER/test" \
    --exclude="usr/lib/$VER/config-*" "usr/lib/$VER" "etc/$VER" \
    etc/ssl/certs/ca-certificates.crt etc/ld.so.cache | tar -C $R -xf -
# C++, zlib and OpenMP runtimes: manylinux wheels link to them without bundling them
# (LightGBM needs libgomp.so.1; the offline base carries Debian's libgomp1, core/setup/engine.py)
extra=$(ls /usr/lib/*/libstdc++.so.6 /usr/lib/*/libgcc_s.so.1 /usr/lib/*/libz.so.1 \
        /usr/lib/*/libgomp.so.1 2>/dev/null || true)
for lib in $( { for f in "$PY" $(find /usr/lib/$VER/lib-dynload -name '*.so') $extra; do
                  ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3}
                                              $1 ~ /^\// {print $1}'
                done; echo $extra | tr ' ' '\n'; } | sort -u); do
    dir=$(readlink -f "$(dirname "$lib")")
    mkdir -p "$R$dir"
    cp -L "$lib" "$R$dir/$(basename "$lib")"
    echo "$dir/$(basename "$lib")" >> $R/etc/mlrig-runtime-libs
done
printf 'root:x:0:0:root:/root:/nonexistent\napp:x:1000:1000:app:/home/app:/nonexistent\n' \
    > $R/etc/passwd
printf 'root:x:0:\napp:x:1000:\n' > $R/etc/group
