#!/bin/bash
# TANDEM stage 1 at a fraction of stage 2's length (steps and budget scaled together: the same epochs per source),
# quality regime, 3 seeds; stage 2 full size on books' whole val split.
cd "$(dirname "$0")/../../.." && source .venv/bin/activate
C="data.shards=data/shards/quality_embedded_bpe2k model.vocab_size=2048 data.seq_len=64 data.batch_size=8 eval.every_n_steps=0"
for cfg in "500 50000" "250 25000"; do set -- $cfg; steps=$1; budget=$2
for s in 0 1 2; do
  d1=outputs/short/s$steps/stage1/seed$s; d2=outputs/short/s$steps/stage2/seed$s
  [ -f $d1/mixture.yaml ] || tune run recipes/data_restricted.py --config configs/data_restricted/tiny_stage1.yaml $C \
     data.total_token_budget=$budget max_steps=$steps mixture.learner=tandem seed=$s output_dir=$d1 > outputs/short/s$steps.st1.seed$s.log 2>&1 || echo FAIL1 $steps $s
  [ -f $d2/eval.json ] || tune run recipes/data_restricted.py --config configs/data_restricted/tiny_stage2.yaml $C \
     data.total_token_budget=100000 max_steps=1000 eval.windows_per_domain=1000000000 data.allow_budget_mismatch=true \
     mixture.learner=fixed mixture.weights_from=$d1/mixture.yaml mixture.use=average seed=$s output_dir=$d2 > outputs/short/s$steps.st2.seed$s.log 2>&1 || echo FAIL2 $steps $s
done; done
echo finished
