//! The `medsyn` command line: clap definitions and dispatch; each subcommand lives in its own file.

pub mod data;
pub mod demo;
pub mod device;
pub mod doctor;
pub mod eval;
pub mod finetune;
pub mod generate;
pub mod inspect;
pub mod kernels;
pub mod pretrain;
pub mod train_generator;

use crate::error::Result;
use clap::{Parser, Subcommand};

/// Top-level arguments. New subcommands are variants of [`Command`] with their
/// own `Args` struct and `run` function in a sibling module.
#[derive(Parser, Debug)]
#[command(
    name = "medsyn",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("MEDSYN_GIT_COMMIT"), ")"),
    about = "A lean Rust runtime for synthetic chest X-ray vision-language pre-training",
    long_about = "medsyn runs the pipeline behind synthetic-data medical vision-language \
                  pre-training: Stable Diffusion (U-Net, VAE, CLIP text encoder) generates \
                  chest X-rays from reports, and image/text encoders (ResNet-50, ViT-B/16, \
                  BERT) are pre-trained and evaluated on them. Weights are read from \
                  safetensors files through memory maps.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the tensors, parameter counts and sizes of weight files or model folders
    ///
    /// Lists each tensor's name, dtype and shape (sorted by name) in a .safetensors
    /// file, a sharded *.safetensors.index.json, or a diffusers/transformers model
    /// folder, then parameter counts and bytes per component and in total. Only
    /// headers are read, so this is instant even for multi-GB checkpoints.
    Inspect(inspect::InspectArgs),
    /// Generate synthetic images from prompts or reports with a Stable Diffusion folder
    ///
    /// Loads a diffusers StableDiffusionPipeline folder (RoentGen, SD 1.x/2.x) and
    /// writes one PNG per prompt or report row plus manifest.csv. Defaults follow
    /// diffusers' pipeline; RoentGen's card recommends --steps 75 --guidance 4.
    /// Reruns skip images already written; --shard I/N splits the work.
    Generate(generate::GenerateArgs),
    /// Fine-tune a Stable Diffusion folder on image–prompt pairs (as RoentGen was made)
    ///
    /// Trains the U-Net (and with --train-text-encoder the CLIP text encoder) with
    /// the noise-prediction loss of the folder's scheduler config (epsilon or v),
    /// AdamW, optional EMA and bf16; checkpoints and resumes; writes a diffusers
    /// folder that `generate` and diffusers load.
    TrainGenerator(train_generator::TrainGeneratorArgs),
    /// List the embedded CUDA kernels: registers, static shared memory and spills per arch
    ///
    /// One line per kernel entry point and architecture (sm_80, sm_90a), with the
    /// columns `kernel arch registers shared_bytes spill_bytes` from ptxas's report at
    /// build time; --json for machines. A binary built without the `cuda` feature has
    /// no kernels: it says so and exits 0.
    Kernels(kernels::KernelsArgs),
    /// Check the CUDA setup: driver, GPUs, NVRTC, cuBLAS, embedded kernels; says what to install
    ///
    /// Reports whether the NVIDIA driver loads (and its CUDA version), each GPU's name,
    /// compute capability and memory, which kernel image it gets (cubin or PTX) and
    /// whether the modules load, whether NVRTC, cuBLAS and cuBLASLt can be loaded, and
    /// what is missing with the fix. Never fails for a missing GPU or library: exits 0
    /// after reporting (also in a binary built without the `cuda` feature).
    Doctor(doctor::DoctorArgs),
    /// ROC AUC per class and mean of classification scores against labels (CSV files)
    ///
    /// Both CSVs have an `id` column and one column per class; rows are matched by id
    /// (in any order) and classes by name. Labels are 1/0, empty = not labelled (left
    /// out for that class). The AUC is exact with tied scores (Mann–Whitney, midranks);
    /// a class whose labelled rows hold one label value only is undefined and left out
    /// of the mean. --json writes the numbers to a file.
    Eval(eval::EvalArgs),
    /// Pre-train image and report encoders on image–report pairs (ConVIRT)
    ///
    /// Trains an image encoder (ResNet or ViT) and a BERT report encoder with a
    /// contrastive method on a manifest CSV; checkpoints every N steps and resumes from
    /// the newest one in --out; exports the image encoder under torchvision/timm names
    /// for PyTorch's load_state_dict and for `medsyn finetune`.
    Pretrain(pretrain::PretrainArgs),
    /// Fine-tune and evaluate a pre-trained image encoder on labelled images
    ///
    /// Multi-label classification with 1 %, 10 % or 100 % of the training labels:
    /// a linear layer on the frozen encoder (--linear-probe, default) or the whole
    /// network (--full), early stopping on the validation mean ROC AUC; writes the test
    /// set's predictions (the format `medsyn eval` reads) and its AUCs as JSON.
    Finetune(finetune::FinetuneArgs),
    /// Data-set tools: `data phantom` writes a procedural chest-radiograph data set
    ///
    /// `medsyn data phantom --n N --size S --seed K --out DIR` draws chest X-ray-like
    /// images with findings, reports, CheXpert-style labels, masks and boxes.
    Data(data::DataArgs),
    /// Run the paper's experiment in miniature on phantom data medsyn makes itself
    ///
    /// Makes a "real" phantom image–report set and a separate labelled downstream set,
    /// trains a small pixel-space text-to-image generator on the real pairs (the code of
    /// train-generator), generates one synthetic image per real report (the code of
    /// generate), pre-trains ConVIRT once on real and once on synthetic pairs, and trains
    /// linear probes with 1 %, 10 % and 100 % of the downstream labels on a random, the
    /// real-pre-trained and the synthetic-pre-trained encoder. Prints the table of mean
    /// AUCs and how well a classifier trained on real phantoms finds the reported
    /// findings in the synthetic images; writes results.json, table.txt and grid.png
    /// (real above synthetic images of the same reports). Reruns resume finished stages.
    Demo(demo::DemoArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect(args) => inspect::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::TrainGenerator(args) => train_generator::run(&args),
        Command::Kernels(args) => kernels::run(&args),
        Command::Doctor(args) => doctor::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Pretrain(args) => pretrain::run(&args),
        Command::Finetune(args) => finetune::run(&args),
        Command::Data(args) => data::run(&args),
        Command::Demo(args) => demo::run(&args),
    }
}
