//! The attribute behind `#[isol8_testkit::test(...)]`; see the `isol8-testkit` crate for
//! what it does and why. Use it through `isol8_testkit`, never directly: the expansion
//! names `::isol8_testkit`.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::punctuated::Punctuated;
use syn::{parse_macro_input, Error, ItemFn, Meta, ReturnType, Token};

/// The words a test may name as what it needs, with the `isol8_testkit::Need` variant
/// each one stands for.
const NEEDS: [(&str, &str); 5] = [
    ("docker", "Docker"),
    ("registries", "Registries"),
    ("postgres", "Postgres"),
    ("mysql", "Mysql"),
    ("root", "Root"),
];

/// `#[isol8_testkit::test(docker, registries, flavor = "multi_thread")]`: a test (a
/// `#[tokio::test]` when the function is `async`, else a `#[test]`) that first checks
/// what it needs — the bare words, in order — and skips or fails when something is
/// missing. `key = value` arguments go to `#[tokio::test]`.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = parse_macro_input!(args with Punctuated::<Meta, Token![,]>::parse_terminated);
    let func = parse_macro_input!(item as ItemFn);
    expand(args, func)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

fn expand(
    args: Punctuated<Meta, Token![,]>,
    func: ItemFn,
) -> syn::Result<proc_macro2::TokenStream> {
    let accepted = || {
        NEEDS
            .iter()
            .map(|(word, _)| *word)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut needs = Vec::new();
    let mut runtime_args = Vec::new();
    for arg in args {
        match &arg {
            Meta::Path(path) => {
                let word = path.get_ident().map(|i| i.to_string()).unwrap_or_default();
                let Some((_, variant)) = NEEDS.iter().find(|(w, _)| *w == word) else {
                    return Err(Error::new_spanned(
                        path,
                        format!("unknown need `{word}`: use {}", accepted()),
                    ));
                };
                needs.push(syn::Ident::new(variant, Span::call_site()));
            }
            Meta::NameValue(_) => runtime_args.push(arg),
            Meta::List(_) => {
                return Err(Error::new_spanned(
                    &arg,
                    "expected a need (a bare word) or a `#[tokio::test]` argument (key = value)",
                ))
            }
        }
    }
    if needs.is_empty() {
        return Err(Error::new(
            Span::call_site(),
            format!(
                "name what the test needs: #[isol8_testkit::test({})]; a test that needs nothing is a plain #[test]",
                accepted()
            ),
        ));
    }
    if !matches!(func.sig.output, ReturnType::Default) {
        return Err(Error::new_spanned(
            &func.sig.output,
            "an #[isol8_testkit::test] returns nothing: a skipped test returns early",
        ));
    }
    let test_attr = if func.sig.asyncness.is_some() {
        quote! {
            #[::isol8_testkit::__private::tokio::test(
                crate = "::isol8_testkit::__private::tokio"
                #(, #runtime_args)*
            )]
        }
    } else if let Some(first) = runtime_args.first() {
        return Err(Error::new_spanned(
            first,
            "`key = value` arguments are for #[tokio::test]: the function is not async",
        ));
    } else {
        quote! { #[::core::prelude::v1::test] }
    };
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
        ..
    } = func;
    let name = sig.ident.to_string();
    Ok(quote! {
        #test_attr
        #(#attrs)*
        #vis #sig {
            if ::isol8_testkit::skipped(
                ::core::concat!(::core::module_path!(), "::", #name),
                &[#(::isol8_testkit::Need::#needs),*],
            ) {
                return;
            }
            #block
        }
    })
}
