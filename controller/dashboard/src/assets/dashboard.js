// DevDB dashboard: copy buttons and printing. Part of DevDB, Apache-2.0 (see the repository's
// LICENSE). The pages work without it.
document.addEventListener("click", async (event) => {
  const copy = event.target.closest("[data-copy]");
  if (copy) {
    try {
      await navigator.clipboard.writeText(copy.dataset.copy);
      copy.textContent = "Copied";
    } catch {
      copy.textContent = "Copy failed";
    }
    setTimeout(() => { copy.textContent = "Copy"; }, 2000);
  }
  if (event.target.closest("[data-print]")) {
    window.print();
  }
});
