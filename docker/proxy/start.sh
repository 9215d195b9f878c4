#!/bin/sh
# Fill the template's ${VARIABLES} from the environment (only those set, so nginx's own $variables
# stay), then run nginx in the foreground: what the official image's entrypoint does, on any base.
set -eu
template=/etc/nginx/templates/clip.conf.template
# shellcheck disable=SC2016
names=$(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/${\1}/p' | tr '\n' ' ')
envsubst "$names" < "$template" > /etc/nginx/conf.d/clip.conf
exec nginx -g 'daemon off;'
