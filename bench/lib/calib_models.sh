# shellcheck shell=bash
# Sourced by the calibration bench scripts after common.sh, with SF, T and WORK set: the models they
# measure, each with its calibration and evaluation text fixed here so every script's runs compare.
#   sample:  samples/jargon-llama; calibration samples/calib.txt; evaluation samples/heldout.txt,
#            --ctx 128, all windows; every other option at its default.
#   stories: ../shared/models/stories260K/stories260K.pt --tokenizer ../shared/models/stories260K/tok512.model;
#            evaluation ../shared/corpus/tinystories_valid_head.txt --ctx 256 --chunks 200 (f32: 3.9174);
#            calibration: the bytes of that file from offset 600000 on (tail -c +600001). The 200
#            evaluation windows lie in the first 600000 bytes, so the two texts are disjoint.
SHARED=../shared
STORIES_TEXT=$SHARED/corpus/tinystories_valid_head.txt

# One row per model: source, tokenizer (or -), calibration text, evaluation text, eval options.
declare -A SRC TOK CALIB TEXT EVAL DESC
SRC[sample]=samples/jargon-llama TOK[sample]=- CALIB[sample]=samples/calib.txt TEXT[sample]=samples/heldout.txt
EVAL[sample]="--ctx 128"
DESC[sample]="calibration samples/calib.txt, evaluation samples/heldout.txt at --ctx 128 (all windows), other options default"
SRC[stories]=$SHARED/models/stories260K/stories260K.pt TOK[stories]=$SHARED/models/stories260K/tok512.model
CALIB[stories]=$WORK/stories_calib.txt TEXT[stories]=$STORIES_TEXT EVAL[stories]="--ctx 256 --chunks 200"
DESC[stories]="evaluation $STORIES_TEXT at --ctx 256 --chunks 200 (its first 600000 bytes); calibration the same file from byte 600000 on (tail -c +600001): disjoint texts"

# MODEL: 0 when it can run (stories needs ../shared; its calibration text is cut here), else 1
# with a message on stdout.
prepare_model() {
  [ -n "${SRC[$1]:-}" ] || die "unknown model $1 (sample, stories)"
  if [ "$1" = stories ]; then
    if [ ! -r "${SRC[stories]}" ] || [ ! -r "$STORIES_TEXT" ]; then
      echo "stories260K: skipped ($SHARED/models/stories260K or $STORIES_TEXT not present)"
      return 1
    fi
    tail -c +600001 "$STORIES_TEXT" >"${CALIB[stories]}"
  fi
  mkdir -p "$WORK/$1"
}

convert_model() {  # MODEL SOURCE NAME ARGS...: convert SOURCE (MODEL's, or a copy of it) to WORK/MODEL/NAME
  local model=$1 src=$2 name=$3
  shift 3
  local tok=()
  [ "${TOK[$model]}" != - ] && tok=(--tokenizer "${TOK[$model]}")
  "$SF" convert "$src" "${tok[@]}" -o "$WORK/$model/$name" --force -t "$T" "$@" \
    >/dev/null 2>"$WORK/err" || { note "$model convert $name $*: $(tail -n1 "$WORK/err")"; return 1; }
}

model_ppl() {  # MODEL NAME: the evaluation perplexity of WORK/MODEL/NAME on stdout (empty on failure)
  # shellcheck disable=SC2086  # EVAL holds several options
  "$SF" eval ppl "$WORK/$1/$2" --text "${TEXT[$1]}" ${EVAL[$1]} -t "$T" --json 2>"$WORK/err" |
    $PY -c 'import json,sys; print(json.load(sys.stdin)["ppl"])' || { note "$1 eval $2: $(tail -n1 "$WORK/err")"; echo; }
}
