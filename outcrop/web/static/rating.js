
const form=document.getElementById('rate');
if(form){
 const groups=[...new Set([...form.querySelectorAll('input[type=radio]')].map(r=>r.name))];
 form.addEventListener('keydown',e=>{
  const t=e.target;
  if(e.key==='Enter'&&(t.tagName!=='TEXTAREA'||e.ctrlKey||e.metaKey)&&t.tagName!=='BUTTON'){
   e.preventDefault();form.requestSubmit();return;}
  if(t.type!=='radio'||e.ctrlKey||e.altKey||e.metaKey||!/^[1-9]$/.test(e.key))return;
  const radios=[...form.querySelectorAll(`input[type=radio][name="${t.name}"]`)];
  const pick=radios[Number(e.key)-1];
  if(!pick)return;
  e.preventDefault();pick.checked=true;
  const next=groups[groups.indexOf(t.name)+1];
  const target=next?(form.querySelector(`input[name="${next}"]:checked`)||form.querySelector(`input[name="${next}"]`))
   :document.getElementById('comment');
  (target||pick).focus();
 });
}
