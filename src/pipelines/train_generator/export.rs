//! Writes the fine-tuned generator as a diffusers folder: the trained U-Net (and
//! text encoder) in f32 under their checkpoint names — the EMA weights when EMA is
//! on — beside copies of the unchanged components.

use super::TrainGeneratorOptions;
use crate::error::{Error, Result};
use crate::io::save_pretrained_weights;
use crate::optim::{AdamW, Ema};
use crate::pipelines::stable_diffusion::StableDiffusion;
use crate::tensor::Tensor;
use std::path::Path;

pub fn export_folder(
    pipe: &StableDiffusion,
    opts: &TrainGeneratorOptions,
    named: &[(String, Tensor)],
    opt: &AdamW,
    ema: Option<&Ema>,
) -> Result<()> {
    let src = &pipe.folder.root;
    let out = &opts.out;
    let values = match ema {
        Some(e) => e.shadow()?,
        None => opt.full_precision_params()?,
    };
    copy_file(&src.join("model_index.json"), &out.join("model_index.json"))?;
    for comp in ["tokenizer", "scheduler", "vae"] {
        if comp == "vae" && pipe.vae.is_none() {
            continue;
        }
        copy_dir(&src.join(comp), &out.join(comp))?;
    }
    let trained = |prefix: &str| -> Vec<(String, Tensor)> {
        named
            .iter()
            .zip(&values)
            .filter_map(|((n, _), v)| n.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
            .collect()
    };
    write_component(
        src,
        out,
        "unet",
        "diffusion_pytorch_model.safetensors",
        &trained("unet."),
    )?;
    if opts.train_text_encoder {
        write_component(
            src,
            out,
            "text_encoder",
            "model.safetensors",
            &trained("text_encoder."),
        )?;
    } else {
        copy_dir(&src.join("text_encoder"), &out.join("text_encoder"))?;
    }
    Ok(())
}

fn write_component(
    src: &Path,
    out: &Path,
    comp: &str,
    file: &str,
    tensors: &[(String, Tensor)],
) -> Result<()> {
    let dir = out.join(comp);
    std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, e))?;
    copy_file(
        &src.join(comp).join("config.json"),
        &dir.join("config.json"),
    )?;
    // Stale weights of another layout (e.g. an index from the source) must not linger.
    for e in std::fs::read_dir(&dir)
        .map_err(|e| Error::file(&dir, e))?
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.contains(".safetensors") && n != file {
            let _ = std::fs::remove_file(e.path());
        }
    }
    save_pretrained_weights(dir.join(file), tensors)
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if from == to {
        return Ok(());
    }
    let tmp = to.with_extension("tmp-copy");
    std::fs::copy(from, &tmp)
        .map_err(|e| Error::file(from, format!("cannot copy to {}: {e}", to.display())))?;
    std::fs::rename(&tmp, to).map_err(|e| Error::file(to, e))?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::file(to, e))?;
    for e in std::fs::read_dir(from)
        .map_err(|e| Error::file(from, e))?
        .flatten()
    {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()))?;
        } else {
            copy_file(&p, &to.join(e.file_name()))?;
        }
    }
    Ok(())
}
