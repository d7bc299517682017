# Shared by bench/callgrind.sh and bench/cpu-split.sh (sourced): the shared harness's nginx
# backend, Switchyard and HAProxy configurations rendered into one directory, on ports of
# their own so a run never meets the harness's (or another script's) processes.
#
# render_peer_configs SHARED_BENCH DIR BASE
#   writes DIR/backend.conf, DIR/switchyard.toml, DIR/haproxy.cfg and DIR/haproxy-fwd.cfg
#   (HAProxy adding Switchyard's forwarding fields: conf/haproxy-forwarding.cfg); the proxies listen on
#   BASE+6 (HTTP/1.1) and BASE+56 (h2c), the backends on BASE+1 and BASE+2 (BASE+3 for h2c),
#   Switchyard's admin API on BASE+99
render_peer_configs() {
    local shared=$1 dir=$2 base=$3
    local ports=(-e "s/@PORT@/$((base + 6))/" -e "s/@H2PORT@/$((base + 56))/"
        -e "s/@B1@/$((base + 1))/" -e "s/@B2@/$((base + 2))/" -e "s/@BH2@/$((base + 3))/"
        -e "s#@RUN@#$dir#g")
    sed "${ports[@]}" "$shared/conf/backend.nginx.conf" >"$dir/backend.conf"
    sed "${ports[@]}" -e "s/18199/$((base + 99))/" "$shared/conf/switchyard.toml" >"$dir/switchyard.toml"
    sed "${ports[@]}" "$shared/conf/haproxy.cfg" >"$dir/haproxy.cfg"
    sed "/^backend be/r $(dirname "${BASH_SOURCE[0]}")/../conf/haproxy-forwarding.cfg" \
        "$dir/haproxy.cfg" >"$dir/haproxy-fwd.cfg"
}
