. .gpu/prefix.sh
cd benchmarks
timeout 200 python3 train_step.py --batch 4 --mode eager --repeats 5 --steps 8 --methods floor ether:4 ether:4/separate ether_plus:4 ether_plus:4/separate peft_lora 2>&1 | grep -v "Warning\|warn\|originates\|upsampling.py\|^$\|dtype == torch" | tee $OUT/eager_ab.log
cp results/train_step_*eager*.json $OUT/
