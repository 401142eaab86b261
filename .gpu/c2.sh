. .gpu/prefix.sh
timeout 200 python3 -m pytest -q -x tests/gpu -k "compiled_step or step_fold_sd15 or unet_training or processor" 2>&1 | tail -4 | tee $OUT/gpu_tests.log
cd benchmarks
timeout 150 python3 train_step.py --batch 4 --mode graph --no-inference --methods floor ether:4 ether_plus:4 peft_lora floor+fused_qkv 2>&1 | grep -v "Warning\|warn\|originates\|upsampling.py\|^$\|dtype == torch" | tee $OUT/graph.log
timeout 200 python3 train_step.py --batch 4 --mode eager --methods floor ether:4 ether_plus:4 peft_lora floor+fused_qkv 2>&1 | grep -v "Warning\|warn\|originates\|upsampling.py\|^$\|dtype == torch" | tee $OUT/eager.log
cp results/train_step_*.json $OUT/
